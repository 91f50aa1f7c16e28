package controllers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/randfill"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/controllers"
)

// Every field of an elevation survives the cache's packing, including fields added to the API
// later: the filler sets them all, so one the packing does not know fails here.
func TestPackedElevationKeepsEveryField(t *testing.T) {
	filler := randfill.NewWithSeed(1).NilChance(0.2).NumElements(0, 3)
	for i := range 500 {
		el := &pamv1.PamElevation{}
		filler.Fill(el)
		el.ManagedFields = nil // dropped by StripForCache before packing
		if i%2 == 0 && el.DeletionTimestamp != nil {
			el.DeletionTimestamp = &metav1.Time{Time: el.DeletionTimestamp.Add(123456789 * time.Nanosecond)}
		}
		packed := controllers.PackForCache(el)
		decoded, ok := controllers.UnpackCached(packed).(*pamv1.PamElevation)
		if !ok {
			t.Fatalf("decoded %T", controllers.UnpackCached(packed))
		}
		if !equality.Semantic.DeepEqual(el, decoded) {
			t.Fatalf("elevation %d changed in the cache (-sent +decoded):\n%s", i, cmp.Diff(el, decoded))
		}
		if meta := controllers.CachedMeta(packed); !equality.Semantic.DeepEqual(meta, &el.ObjectMeta) {
			t.Fatalf("elevation %d: metadata changed (-sent +decoded):\n%s", i, cmp.Diff(&el.ObjectMeta, meta))
		}
		if got, want := controllers.CachedState(packed), controllers.StateOf(el); got != want {
			t.Fatalf("elevation %d: packed with state %q, is %q", i, got, want)
		}
	}
}

// Empty and absent lists, maps and times stay as they were: nil is not turned into empty.
func TestPackedElevationKeepsNilApartFromEmpty(t *testing.T) {
	g := NewWithT(t)
	el := &pamv1.PamElevation{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{}, Finalizers: []string{}}}
	el.Status.Conditions = []metav1.Condition{}
	decoded := controllers.UnpackCached(controllers.PackForCache(el)).(*pamv1.PamElevation)
	g.Expect(decoded.Labels).To(BeEmpty())
	g.Expect(decoded.Labels).NotTo(BeNil())
	g.Expect(decoded.Annotations).To(BeNil())
	g.Expect(decoded.Finalizers).NotTo(BeNil())
	g.Expect(decoded.OwnerReferences).To(BeNil())
	g.Expect(decoded.Status.Conditions).NotTo(BeNil())
	g.Expect(decoded.CreationTimestamp.IsZero()).To(BeTrue())
	g.Expect(decoded.DeletionTimestamp).To(BeNil())
}

// The manager's cache holds an elevation packed and hands it out as the API server has it, less
// what StripForCache drops.
func TestCacheHandsOutTheElevationTheServerHas(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	el := &pamv1.PamElevation{
		ObjectMeta: metav1.ObjectMeta{
			Name: "packed", Namespace: ns,
			Labels: map[string]string{"team": "a"},
			Annotations: map[string]string{
				"note": "kept",
				"kubectl.kubernetes.io/last-applied-configuration": `{"dropped":true}`,
			},
			Finalizers: []string{"example.com/keep"},
		},
		Spec: pamv1.PamElevationSpec{
			RequestID:      "3f2b8a61-0c4d-4e8f-9a7b-1d2e3f405162",
			ServerRef:      pamv1.ServerReference{Name: "absent"},
			TTL:            &metav1.Duration{Duration: 90 * time.Minute},
			DeletionPolicy: pamv1.DeletionPolicyOrphan,
		},
	}
	g.Expect(k8sClient.Create(ctx, el)).To(Succeed())
	t.Cleanup(func() {
		_ = k8sClient.Patch(ctx, el, client.RawPatch("application/merge-patch+json", []byte(`{"metadata":{"finalizers":null}}`)))
		_ = k8sClient.Delete(ctx, el)
	})

	fromServer := &pamv1.PamElevation{}
	fromCache := &pamv1.PamElevation{}
	g.Eventually(func(g Gomega) {
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(el), fromServer)).To(Succeed())
		g.Expect(managerClient.Get(ctx, client.ObjectKeyFromObject(el), fromCache)).To(Succeed())
		g.Expect(fromCache.ResourceVersion).To(Equal(fromServer.ResourceVersion))
	}).Should(Succeed())
	held, err := controllers.HeldPacked(ctx, managerCache, client.ObjectKeyFromObject(el))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(held).To(BeTrue(), "the cache's store holds the elevation packed")

	want := fromServer.DeepCopy()
	want.ManagedFields = nil
	delete(want.Annotations, "kubectl.kubernetes.io/last-applied-configuration")
	fromCache.TypeMeta = want.TypeMeta
	g.Expect(equality.Semantic.DeepEqual(fromCache, want)).To(BeTrue(), "(-server +cache):\n%s", cmp.Diff(want, fromCache))
	g.Expect(fromCache.Labels).To(Equal(map[string]string{"team": "a"}))
	g.Expect(fromCache.Spec.TTL).To(Equal(ptr.To(metav1.Duration{Duration: 90 * time.Minute})))

	// A list through the cache decodes each item too.
	var list pamv1.PamElevationList
	g.Expect(managerClient.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
	g.Expect(list.Items).To(HaveLen(1))
	raw, err := json.Marshal(list.Items[0].Spec)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(string(raw)).To(ContainSubstring(`"requestID":"3f2b8a61-0c4d-4e8f-9a7b-1d2e3f405162"`))
}

// activeElevation is an elevation as the operator leaves it once the request is open.
func activeElevation(name, message string) *pamv1.PamElevation {
	at := metav1.NewTime(time.Date(2026, 12, 1, 1, 40, 7, 0, time.UTC))
	el := &pamv1.PamElevation{
		TypeMeta: metav1.TypeMeta{APIVersion: "pam.mim.dev/v1alpha1", Kind: "PamElevation"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "team-a", UID: "668dccf4-53e0-48c5-a098-a7b4d74d5b03",
			ResourceVersion: "3256", Generation: 1, CreationTimestamp: at, Finalizers: []string{pamv1.ElevationFinalizer}},
		Spec: pamv1.PamElevationSpec{RequestID: "7e738537-0b99-45df-80d2-3610e701bffe",
			ServerRef: pamv1.ServerReference{Kind: "PamServer", Name: "pam"}, DeletionPolicy: pamv1.DeletionPolicyClose},
	}
	el.Status.RequestStatus = "Active"
	el.Status.LastSyncTime = &at
	for _, condType := range []string{pamv1.ConditionClosed, pamv1.ConditionReady} {
		el.Status.Conditions = append(el.Status.Conditions, metav1.Condition{Type: condType, Status: metav1.ConditionTrue,
			Reason: "Active", Message: message, ObservedGeneration: 1, LastTransitionTime: at})
	}
	return el
}

// What elevations have in common is held once by the table: a long message shared by every
// elevation costs each only its number.
func TestPackedElevationsShareWords(t *testing.T) {
	g := NewWithT(t)
	words := controllers.NewWordTable(100)
	message := strings.Repeat("The request is open in PAM. ", 8)
	first := controllers.PackWithWords(activeElevation("el-1", message), words)
	held := words.Len()
	for i := range 50 {
		el := activeElevation(fmt.Sprintf("el-%d", i+2), message)
		packed := controllers.PackWithWords(el, words)
		expectDecodesTo(g, packed, el)
		g.Expect(controllers.PackedSize(packed)).To(BeNumerically("<", len(message)), "the message is not written into the elevation")
	}
	g.Expect(words.Len()).To(Equal(held), "later elevations add no words")
	expectDecodesTo(g, first, activeElevation("el-1", message))
}

// Words unique to each elevation cannot grow the table without bound: once full, it takes no
// more and the elevations carry the text themselves, and every elevation still decodes whole.
func TestPackedWordTableIsBounded(t *testing.T) {
	g := NewWithT(t)
	const limit = 16
	words := controllers.NewWordTable(limit)
	var packed []any
	for i := range 40 {
		packed = append(packed, controllers.PackWithWords(activeElevation("el", fmt.Sprintf("failure %d", i)), words))
	}
	g.Expect(words.Len()).To(Equal(limit))
	for i, item := range packed {
		expectDecodesTo(g, item, activeElevation("el", fmt.Sprintf("failure %d", i)))
	}
	last := fmt.Sprintf("failure %d", len(packed)-1)
	g.Expect(controllers.PackedSize(packed[len(packed)-1])).To(BeNumerically(">", 2*len(last)), "a message the table has no room for is written inline, in each condition")
	long := activeElevation("el", strings.Repeat("x", 300))
	roomy := controllers.NewWordTable(limit)
	expectDecodesTo(g, controllers.PackWithWords(long, roomy), long)
	g.Expect(roomy.Len()).To(BeNumerically("<", limit), "a string too long for a word is not taken")
}

func expectDecodesTo(g Gomega, packed any, want *pamv1.PamElevation) {
	decoded := controllers.UnpackCached(packed)
	g.ExpectWithOffset(1, equality.Semantic.DeepEqual(decoded, want)).To(BeTrue(), "(-want +decoded):\n%s", cmp.Diff(want, decoded))
}

// A change is decoded once for everything that reads it in turn — index functions, each event
// handler, the reconcile's read — and the memo holds only the last few.
func TestOneChangeIsDecodedOnce(t *testing.T) {
	g := NewWithT(t)
	memo := &controllers.UnpackMemo{}
	el := activeElevation("el-1", "The request is open in PAM")
	packed := controllers.PackForCache(el)
	first := memo.Decode(packed)
	expectDecodesTo(g, packed, el)
	g.Expect(memo.Decode(packed)).To(BeIdenticalTo(first))
	other := controllers.PackForCache(activeElevation("el-2", "The request is open in PAM"))
	g.Expect(memo.Decode(other)).NotTo(BeIdenticalTo(first))
	g.Expect(memo.Decode(packed)).To(BeIdenticalTo(first), "a second object does not push out the first")
	for i := range controllers.MemoSize {
		memo.Decode(controllers.PackForCache(activeElevation(fmt.Sprintf("filler-%d", i), "")))
	}
	again := memo.Decode(packed)
	g.Expect(again).NotTo(BeIdenticalTo(first), "the memo keeps only the last few")
	g.Expect(equality.Semantic.DeepEqual(again, first)).To(BeTrue())
}
