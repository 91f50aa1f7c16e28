package controllers_test

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"testing"

	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	toolscache "k8s.io/client-go/tools/cache"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/controllers"
)

// BenchmarkCachedElevation reports the heap one Active elevation holds in the manager's cache:
// the object decoded from the API server's JSON (testdata: an elevation of `make bench`, with its
// managed fields), stripped and interned by StripForCache, its store entry and its index entries.
// It is the live part of the memory figure of `make bench`, measured without the GC's headroom.
func BenchmarkCachedElevation(b *testing.B) {
	const count = 10000
	template, err := os.ReadFile("testdata/active-elevation.json")
	if err != nil {
		b.Fatal(err)
	}
	docs := make([][]byte, count)
	for i := range docs {
		doc := bytes.ReplaceAll(template, []byte("el-001000"), fmt.Appendf(nil, "el-%06d", i))
		doc = bytes.ReplaceAll(doc, []byte("668dccf4-53e0-48c5-a098"), fmt.Appendf(nil, "668dccf4-53e0-48c5-%04x", i))
		docs[i] = bytes.ReplaceAll(doc, []byte("7e738537-0b99-45df-80d2"), fmt.Appendf(nil, "7e738537-0b99-45df-%04x", i))
	}
	scheme := k8sruntime.NewScheme()
	if err := pamv1.AddToScheme(scheme); err != nil {
		b.Fatal(err)
	}
	decoder := serializer.NewCodecFactory(scheme).UniversalDeserializer()
	indexers := controllers.ElevationIndexers()
	indexers[toolscache.NamespaceIndex] = toolscache.MetaNamespaceIndexFunc

	var held uint64
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		store := toolscache.NewIndexer(toolscache.MetaNamespaceKeyFunc, indexers)
		for _, doc := range docs {
			obj, _, err := decoder.Decode(doc, nil, &pamv1.PamElevation{})
			if err != nil {
				b.Fatal(err)
			}
			stripped, err := controllers.StripForCache(obj)
			if err != nil {
				b.Fatal(err)
			}
			if err := store.Add(stripped); err != nil {
				b.Fatal(err)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if len(store.List()) != count {
			b.Fatalf("the store holds %d elevations, want %d", len(store.List()), count)
		}
		held = after.HeapAlloc - before.HeapAlloc
	}
	b.ReportMetric(float64(held)/count, "B/elevation")
}
