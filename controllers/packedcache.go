package controllers

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
)

// The cache holds elevations packed: every field of the stripped object encoded into one
// string, about 160 bytes with the strings elevations share held once per informer, where the
// typed object takes 890 in 11 allocations, and which the garbage collector does not scan. The
// informer packs each object as it arrives; everything that reads the cache — controller-runtime's
// reader, event handlers, index functions — gets a typed object decoded from it, whose strings
// point into the packed text or the word table. Other kinds are cached as controller-runtime
// caches them.

// CacheOptions are the manager's cache options: objects stripped of what no controller reads
// (StripForCache), and elevations held packed.
func CacheOptions() cache.Options {
	return cache.Options{DefaultTransform: StripForCache, NewInformer: newInformer}
}

// newInformer is client-go's shared informer, packing for elevations.
func newInformer(lw toolscache.ListerWatcher, obj runtime.Object, resync time.Duration, indexers toolscache.Indexers) toolscache.SharedIndexInformer {
	if _, ok := obj.(*pamv1.PamElevation); !ok {
		return toolscache.NewSharedIndexInformer(lw, obj, resync, indexers)
	}
	memo := &unpackMemo{}
	inner := toolscache.NewSharedIndexInformer(lw, obj, resync, unpackingIndexers(indexers, memo))
	informer := &packedInformer{SharedIndexInformer: inner, memo: memo, words: newWordTable(maxWords),
		indexer: packedIndexer{Indexer: inner.GetIndexer(), memo: memo}}
	// controller-runtime sets its own transform; this one packs also without.
	_ = informer.SetTransform(nil)
	return informer
}

// packedInformer is a shared informer whose store holds elevations packed, and which hands
// them out decoded.
type packedInformer struct {
	toolscache.SharedIndexInformer
	memo    *unpackMemo
	words   *wordTable
	indexer packedIndexer
}

func (i *packedInformer) AddEventHandler(h toolscache.ResourceEventHandler) (toolscache.ResourceEventHandlerRegistration, error) {
	return i.SharedIndexInformer.AddEventHandler(unpackingHandler{h, i.memo})
}

func (i *packedInformer) AddEventHandlerWithResyncPeriod(h toolscache.ResourceEventHandler, resync time.Duration) (toolscache.ResourceEventHandlerRegistration, error) {
	return i.SharedIndexInformer.AddEventHandlerWithResyncPeriod(unpackingHandler{h, i.memo}, resync)
}

func (i *packedInformer) AddEventHandlerWithOptions(h toolscache.ResourceEventHandler, opts toolscache.HandlerOptions) (toolscache.ResourceEventHandlerRegistration, error) {
	return i.SharedIndexInformer.AddEventHandlerWithOptions(unpackingHandler{h, i.memo}, opts)
}

func (i *packedInformer) AddIndexers(indexers toolscache.Indexers) error {
	return i.SharedIndexInformer.AddIndexers(unpackingIndexers(indexers, i.memo))
}

func (i *packedInformer) GetStore() toolscache.Store { return i.indexer }

func (i *packedInformer) GetIndexer() toolscache.Indexer { return i.indexer }

// SetTransform runs transform, then packs what it returns.
func (i *packedInformer) SetTransform(transform toolscache.TransformFunc) error {
	return i.SharedIndexInformer.SetTransform(func(obj any) (any, error) {
		if transform != nil {
			var err error
			if obj, err = transform(obj); err != nil {
				return nil, err
			}
		}
		if el, ok := obj.(*pamv1.PamElevation); ok {
			return packElevation(el, i.words), nil
		}
		return obj, nil
	})
}

// packedIndexer decodes what the informer's store returns. Writes go to the store as they are:
// only the informer writes to it, and it writes packed objects. A single object read may be one
// the event handlers were just handed: controller-runtime's reader copies it before use.
type packedIndexer struct {
	toolscache.Indexer
	memo *unpackMemo
}

func (x packedIndexer) List() []any { return unpackAll(x.Indexer.List()) }

func (x packedIndexer) Get(obj any) (any, bool, error) {
	item, exists, err := x.Indexer.Get(obj)
	return x.memo.unpackAny(item), exists, err
}

func (x packedIndexer) GetByKey(key string) (any, bool, error) {
	item, exists, err := x.Indexer.GetByKey(key)
	return x.memo.unpackAny(item), exists, err
}

func (x packedIndexer) Index(indexName string, obj any) ([]any, error) {
	items, err := x.Indexer.Index(indexName, obj)
	return unpackAll(items), err
}

func (x packedIndexer) ByIndex(indexName, value string) ([]any, error) {
	items, err := x.Indexer.ByIndex(indexName, value)
	return unpackAll(items), err
}

// raw is the store itself, whose elevations are packed.
func (x packedIndexer) raw() toolscache.Indexer { return x.Indexer }

// unpackingHandler hands an event handler decoded objects. Handlers share them, as they share
// the store's objects in client-go: none may change what it is handed.
type unpackingHandler struct {
	inner toolscache.ResourceEventHandler
	memo  *unpackMemo
}

func (h unpackingHandler) OnAdd(obj any, isInInitialList bool) {
	h.inner.OnAdd(h.memo.unpackAny(obj), isInInitialList)
}

func (h unpackingHandler) OnUpdate(oldObj, newObj any) {
	h.inner.OnUpdate(h.memo.unpackAny(oldObj), h.memo.unpackAny(newObj))
}

func (h unpackingHandler) OnDelete(obj any) { h.inner.OnDelete(h.memo.unpackAny(obj)) }

// unpackingIndexers has the index functions see decoded objects.
func unpackingIndexers(indexers toolscache.Indexers, memo *unpackMemo) toolscache.Indexers {
	wrapped := make(toolscache.Indexers, len(indexers))
	for name, fn := range indexers {
		wrapped[name] = func(obj any) ([]string, error) {
			if p, ok := obj.(*packedElevation); ok {
				return fn(memo.unpack(p))
			}
			return fn(obj)
		}
	}
	return wrapped
}

// unpackMemo keeps the objects decoded last, so that one change is decoded once: the store runs
// each index function on the old and the new object of an update, then each event handler is
// handed both, and the reconcile it queues reads the new one. Entries hold what they decoded
// from, so a pointer cannot be reused for another object while it is remembered.
type unpackMemo struct {
	mu      sync.Mutex
	packed  [memoSize]*packedElevation
	decoded [memoSize]*pamv1.PamElevation
	next    int
}

// memoSize covers the old and new object of the few changes in flight between the store and
// the handlers.
const memoSize = 8

// unpack decodes p, or returns what the memo decoded from it; a nil memo always decodes.
func (m *unpackMemo) unpack(p *packedElevation) *pamv1.PamElevation {
	if m == nil {
		return p.unpack()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, q := range m.packed {
		if q == p {
			return m.decoded[i]
		}
	}
	el := p.unpack()
	m.packed[m.next], m.decoded[m.next] = p, el
	m.next = (m.next + 1) % memoSize
	return el
}

// unpackAny decodes a cached item that is a packed elevation, or one held by a deleted-object
// marker, through the memo.
func (m *unpackMemo) unpackAny(obj any) any {
	switch o := obj.(type) {
	case *packedElevation:
		return m.unpack(o)
	case toolscache.DeletedFinalStateUnknown:
		if p, ok := o.Obj.(*packedElevation); ok {
			o.Obj = m.unpack(p)
		}
		return o
	}
	return obj
}

// unpackAny decodes a cached item afresh, for a caller that may change what it gets.
func unpackAny(obj any) any { return (*unpackMemo)(nil).unpackAny(obj) }

func unpackAll(items []any) []any {
	for i, item := range items {
		items[i] = unpackAny(item)
	}
	return items
}

// packedElevation is an elevation encoded by packElevation. It never changes once made.
type packedElevation struct {
	data  string
	words *wordTable
}

var (
	_ runtime.Object            = (*packedElevation)(nil)
	_ metav1.ObjectMetaAccessor = (*packedElevation)(nil)
)

func (p *packedElevation) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

// DeepCopyObject returns p itself: it is immutable.
func (p *packedElevation) DeepCopyObject() runtime.Object { return p }

// GetObjectMeta decodes the metadata, for client-go's store keys and resource versions.
func (p *packedElevation) GetObjectMeta() metav1.Object {
	u := p.unpacker()
	meta := &metav1.ObjectMeta{}
	u.metadata(&metav1.TypeMeta{}, meta)
	return meta
}

// unpacker reads p from its metadata on.
func (p *packedElevation) unpacker() unpacker {
	return unpacker{data: p.data, pos: 1, words: p.words}
}

// state is the elevation's state (stateOf), kept apart so that the gauge reads it alone.
func (p *packedElevation) state() string { return elevationStateNames[p.data[0]] }

// requestID decodes spec.requestID alone.
func (p *packedElevation) requestID() string {
	u := p.unpacker()
	u.skipSection() // metadata
	return u.str()
}

// A word table holds the strings that an informer's elevations share — API version, kind,
// namespace, generateName, finalizers, server, deletion policy, condition types, reasons and
// messages, label and annotation keys — once, and each packed elevation refers to them by
// number: ten thousand elevations share a few dozen words. Values that may be unique to an
// object (names, uids, request ids, label and annotation values) are always written inline. The
// table never forgets a word, so it stops growing at its limit, and longer strings are not
// taken: what does not fit is written inline too, and the table holds at most
// limit×maxWordLen bytes.
const (
	maxWords   = 4096
	maxWordLen = 256
)

type wordTable struct {
	limit   int
	mu      sync.RWMutex
	numbers map[string]uint64
	// list is read without the lock: a writer appends and then publishes the longer slice, and
	// a reader only reads numbers that were published before the elevation naming them was.
	list atomic.Pointer[[]string]
}

func newWordTable(limit int) *wordTable {
	return &wordTable{limit: limit, numbers: map[string]uint64{}}
}

// number returns the number of s, adding it while the table has room.
func (t *wordTable) number(s string) (uint64, bool) {
	if s == "" || len(s) > maxWordLen {
		return 0, false
	}
	t.mu.RLock()
	n, ok := t.numbers[s]
	t.mu.RUnlock()
	if ok {
		return n, true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if n, ok := t.numbers[s]; ok {
		return n, true
	}
	var list []string
	if p := t.list.Load(); p != nil {
		list = *p
	}
	if len(list) >= t.limit {
		return 0, false
	}
	n = uint64(len(list))
	// A copy, so the table does not keep alive the buffer s may be part of.
	s = strings.Clone(s)
	list = append(list, s)
	t.list.Store(&list)
	t.numbers[s] = n
	return n, true
}

// word returns the word numbered n; a number the table never gave out is a defect.
func (t *wordTable) word(n uint64) string {
	if p := t.list.Load(); p != nil && n < uint64(len(*p)) {
		return (*p)[n]
	}
	panic("packed elevation: unknown word")
}

// The encoding: the elevation's state as its number in elevationStateNames, one byte; the
// metadata as one length-prefixed section, so that it can be decoded or skipped alone; then the
// spec and the status. Strings and lists are prefixed with their length as a uvarint, lists and
// maps with length+1 so that 0 is nil; shared strings are words (see wordTable); integers are
// varints; an optional value (pointer) has a presence byte. Times keep seconds and nanoseconds.

func packElevation(el *pamv1.PamElevation, words *wordTable) *packedElevation {
	meta := packer{words: words}
	meta.objectMeta(&el.TypeMeta, &el.ObjectMeta)
	p := packer{buf: make([]byte, 0, len(meta.buf)+256), words: words}
	p.buf = append(p.buf, byte(slices.Index(elevationStateNames, stateOf(el))))
	p.uvarint(uint64(len(meta.buf)))
	p.buf = append(p.buf, meta.buf...)

	spec := &el.Spec
	p.str(spec.RequestID)
	p.word(string(spec.ServerRef.Kind))
	p.word(spec.ServerRef.Name)
	p.timePtr(spec.ExpiresAt)
	p.durationPtr(spec.TTL)
	p.word(string(spec.DeletionPolicy))

	status := &el.Status
	p.word(status.RequestStatus)
	p.timePtr(status.ExpiresAt)
	p.timePtr(status.ClosedAt)
	p.timePtr(status.RequestExpirationTime)
	p.timePtr(status.LastSyncTime)
	p.varint(status.ObservedGeneration)
	p.count(status.Conditions == nil, len(status.Conditions))
	for i := range status.Conditions {
		c := &status.Conditions[i]
		p.word(c.Type)
		p.word(string(c.Status))
		p.varint(c.ObservedGeneration)
		p.time(c.LastTransitionTime)
		p.word(c.Reason)
		p.word(c.Message)
	}
	return &packedElevation{data: string(p.buf), words: words}
}

func (p *packedElevation) unpack() *pamv1.PamElevation {
	u := p.unpacker()
	el := &pamv1.PamElevation{}
	u.metadata(&el.TypeMeta, &el.ObjectMeta)

	spec := &el.Spec
	spec.RequestID = u.str()
	spec.ServerRef.Kind = pamv1.ServerKind(u.word())
	spec.ServerRef.Name = u.word()
	spec.ExpiresAt = u.timePtr()
	spec.TTL = u.durationPtr()
	spec.DeletionPolicy = pamv1.DeletionPolicy(u.word())

	status := &el.Status
	status.RequestStatus = u.word()
	status.ExpiresAt = u.timePtr()
	status.ClosedAt = u.timePtr()
	status.RequestExpirationTime = u.timePtr()
	status.LastSyncTime = u.timePtr()
	status.ObservedGeneration = u.varint()
	if n, ok := u.count(); ok {
		status.Conditions = make([]metav1.Condition, n)
		for i := range status.Conditions {
			c := &status.Conditions[i]
			c.Type = u.word()
			c.Status = metav1.ConditionStatus(u.word())
			c.ObservedGeneration = u.varint()
			c.LastTransitionTime = u.time()
			c.Reason = u.word()
			c.Message = u.word()
		}
	}
	if u.pos != len(u.data) {
		panic(fmt.Sprintf("packed elevation: %d bytes left over", len(u.data)-u.pos))
	}
	return el
}

type packer struct {
	buf   []byte
	words *wordTable
}

// objectMeta writes the type and metadata; managed fields are not kept (StripForCache drops them).
func (p *packer) objectMeta(tm *metav1.TypeMeta, m *metav1.ObjectMeta) {
	p.word(tm.APIVersion)
	p.word(tm.Kind)
	p.str(m.Name)
	p.word(m.Namespace)
	p.str(m.ResourceVersion)
	p.str(string(m.UID))
	p.word(m.GenerateName)
	p.str(m.SelfLink)
	p.varint(m.Generation)
	p.time(m.CreationTimestamp)
	p.timePtr(m.DeletionTimestamp)
	p.present(m.DeletionGracePeriodSeconds != nil)
	if m.DeletionGracePeriodSeconds != nil {
		p.varint(*m.DeletionGracePeriodSeconds)
	}
	p.stringMap(m.Labels)
	p.stringMap(m.Annotations)
	p.count(m.OwnerReferences == nil, len(m.OwnerReferences))
	for i := range m.OwnerReferences {
		ref := &m.OwnerReferences[i]
		p.word(ref.APIVersion)
		p.word(ref.Kind)
		p.str(ref.Name)
		p.str(string(ref.UID))
		p.boolPtr(ref.Controller)
		p.boolPtr(ref.BlockOwnerDeletion)
	}
	p.count(m.Finalizers == nil, len(m.Finalizers))
	for _, f := range m.Finalizers {
		p.word(f)
	}
}

func (p *packer) uvarint(v uint64) { p.buf = binary.AppendUvarint(p.buf, v) }

func (p *packer) varint(v int64) { p.buf = binary.AppendVarint(p.buf, v) }

func (p *packer) str(s string) {
	p.uvarint(uint64(len(s)))
	p.buf = append(p.buf, s...)
}

// word writes s as its number in the shared word table, or inline when the table does not take
// it: a uvarint holding the number and 1, or the length and 0, then the text.
func (p *packer) word(s string) {
	if n, ok := p.words.number(s); ok {
		p.uvarint(n<<1 | 1)
		return
	}
	p.uvarint(uint64(len(s)) << 1)
	p.buf = append(p.buf, s...)
}

func (p *packer) present(ok bool) {
	if ok {
		p.buf = append(p.buf, 1)
	} else {
		p.buf = append(p.buf, 0)
	}
}

func (p *packer) count(isNil bool, n int) {
	if isNil {
		p.uvarint(0)
	} else {
		p.uvarint(uint64(n) + 1)
	}
}

func (p *packer) time(t metav1.Time) {
	if t.IsZero() {
		p.present(false)
		return
	}
	p.present(true)
	p.varint(t.Unix())
	p.uvarint(uint64(t.Nanosecond()))
}

func (p *packer) timePtr(t *metav1.Time) {
	p.present(t != nil)
	if t != nil {
		p.time(*t)
	}
}

func (p *packer) durationPtr(d *metav1.Duration) {
	p.present(d != nil)
	if d != nil {
		p.varint(int64(d.Duration))
	}
}

func (p *packer) boolPtr(b *bool) {
	switch {
	case b == nil:
		p.buf = append(p.buf, 0)
	case *b:
		p.buf = append(p.buf, 2)
	default:
		p.buf = append(p.buf, 1)
	}
}

// stringMap writes a map whose keys are words.
func (p *packer) stringMap(m map[string]string) {
	p.count(m == nil, len(m))
	for k, v := range m {
		p.word(k)
		p.str(v)
	}
}

// unpacker reads what packer wrote. Its input comes only from packElevation in this process:
// anything it cannot read is a defect, and panics.
type unpacker struct {
	data  string
	pos   int
	words *wordTable
}

// metadata reads the section packer.objectMeta wrote, with its length.
func (u *unpacker) metadata(tm *metav1.TypeMeta, m *metav1.ObjectMeta) {
	u.uvarint()
	tm.APIVersion = u.word()
	tm.Kind = u.word()
	m.Name = u.str()
	m.Namespace = u.word()
	m.ResourceVersion = u.str()
	m.UID = types.UID(u.str())
	m.GenerateName = u.word()
	m.SelfLink = u.str()
	m.Generation = u.varint()
	m.CreationTimestamp = u.time()
	m.DeletionTimestamp = u.timePtr()
	if u.present() {
		seconds := u.varint()
		m.DeletionGracePeriodSeconds = &seconds
	}
	m.Labels = u.stringMap()
	m.Annotations = u.stringMap()
	if n, ok := u.count(); ok {
		m.OwnerReferences = make([]metav1.OwnerReference, n)
		for i := range m.OwnerReferences {
			ref := &m.OwnerReferences[i]
			ref.APIVersion = u.word()
			ref.Kind = u.word()
			ref.Name = u.str()
			ref.UID = types.UID(u.str())
			ref.Controller = u.boolPtr()
			ref.BlockOwnerDeletion = u.boolPtr()
		}
	}
	if n, ok := u.count(); ok {
		m.Finalizers = make([]string, n)
		for i := range m.Finalizers {
			m.Finalizers[i] = u.word()
		}
	}
}

func (u *unpacker) skipSection() {
	n := u.uvarint()
	u.pos += int(n)
}

func (u *unpacker) uvarint() uint64 {
	var v uint64
	for shift := uint(0); ; shift += 7 {
		if u.pos >= len(u.data) || shift > 63 {
			panic("packed elevation: truncated varint")
		}
		b := u.data[u.pos]
		u.pos++
		v |= uint64(b&0x7f) << shift
		if b < 0x80 {
			return v
		}
	}
}

func (u *unpacker) varint() int64 {
	ux := u.uvarint()
	v := int64(ux >> 1)
	if ux&1 != 0 {
		v = ^v
	}
	return v
}

func (u *unpacker) str() string { return u.text(u.uvarint()) }

// text reads the n bytes of a string whose length was read.
func (u *unpacker) text(n uint64) string {
	if n > uint64(len(u.data)-u.pos) {
		panic("packed elevation: truncated string")
	}
	s := u.data[u.pos : u.pos+int(n)]
	u.pos += int(n)
	return s
}

func (u *unpacker) word() string {
	v := u.uvarint()
	if v&1 != 0 {
		return u.words.word(v >> 1)
	}
	return u.text(v >> 1)
}

func (u *unpacker) byte() byte {
	if u.pos >= len(u.data) {
		panic("packed elevation: truncated")
	}
	b := u.data[u.pos]
	u.pos++
	return b
}

func (u *unpacker) present() bool { return u.byte() != 0 }

func (u *unpacker) count() (int, bool) {
	n := u.uvarint()
	if n == 0 {
		return 0, false
	}
	if n-1 > uint64(len(u.data)-u.pos) {
		panic("packed elevation: count past the end")
	}
	return int(n - 1), true
}

func (u *unpacker) time() metav1.Time {
	if !u.present() {
		return metav1.Time{}
	}
	seconds := u.varint()
	nanos := u.uvarint()
	return metav1.Time{Time: time.Unix(seconds, int64(nanos))}
}

func (u *unpacker) timePtr() *metav1.Time {
	if !u.present() {
		return nil
	}
	t := u.time()
	return &t
}

func (u *unpacker) durationPtr() *metav1.Duration {
	if !u.present() {
		return nil
	}
	return &metav1.Duration{Duration: time.Duration(u.varint())}
}

func (u *unpacker) boolPtr() *bool {
	var b bool
	switch u.byte() {
	case 0:
		return nil
	case 2:
		b = true
	}
	return &b
}

func (u *unpacker) stringMap() map[string]string {
	n, ok := u.count()
	if !ok {
		return nil
	}
	m := make(map[string]string, n)
	for range n {
		k := u.word()
		m[k] = u.str()
	}
	return m
}

// requestIDMatches reports whether a cached item, packed or not, is an elevation of the request.
func requestIDMatches(item any, id string) bool {
	switch o := item.(type) {
	case *packedElevation:
		return strings.EqualFold(o.requestID(), id)
	case *pamv1.PamElevation:
		return strings.EqualFold(o.Spec.RequestID, id)
	}
	return false
}
