package credentials

import (
	"context"
	"reflect"
	"sync"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"
)

// liveReadTimeout bounds one shared read, which no single caller's context may cut short.
const liveReadTimeout = 30 * time.Second

// CoalescingReader reads objects straight from the API server, sharing one request between
// concurrent Gets of the same object. A caller only shares a request that starts after it
// called, never one already in flight: what it reads is at least as new as its call, exactly as
// with a request of its own, so a Secret changed before a call is what that call uses. A burst of
// closes through one server then costs a few Secret reads instead of one per close.
type CoalescingReader struct {
	client.Reader

	mu      sync.Mutex
	flights map[string]*flightPair
}

// flightPair is the read in flight for one object and the one queued behind it, which callers
// that arrived during the first will share.
type flightPair struct {
	running, next *flight
}

type flight struct {
	key client.ObjectKey
	obj client.Object
	err error
	// callers counts those sharing the read.
	callers int
	done    chan struct{}
}

// Get reads the object, sharing the read with concurrent Gets of the same object.
func (r *CoalescingReader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if len(opts) > 0 {
		return r.Reader.Get(ctx, key, obj, opts...)
	}
	objType := reflect.TypeOf(obj).Elem()
	id := objType.String() + "/" + key.String()

	r.mu.Lock()
	if r.flights == nil {
		r.flights = map[string]*flightPair{}
	}
	pair := r.flights[id]
	if pair == nil {
		pair = &flightPair{}
		r.flights[id] = pair
	}
	var f *flight
	switch {
	case pair.running == nil:
		f = newFlight(key, objType)
		pair.running = f
		go r.fly(context.WithoutCancel(ctx), id, pair)
	case pair.next != nil:
		f = pair.next
	default:
		f = newFlight(key, objType)
		pair.next = f
	}
	f.callers++
	r.mu.Unlock()

	select {
	case <-f.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if f.err != nil {
		return f.err
	}
	// Each caller gets its own copy: callers may change what they read.
	reflect.ValueOf(obj).Elem().Set(reflect.ValueOf(f.obj.DeepCopyObject()).Elem())
	return nil
}

func newFlight(key client.ObjectKey, objType reflect.Type) *flight {
	return &flight{key: key, obj: reflect.New(objType).Interface().(client.Object), done: make(chan struct{})}
}

// fly performs the pair's reads one after the other until no caller waits for another.
func (r *CoalescingReader) fly(ctx context.Context, id string, pair *flightPair) {
	r.mu.Lock()
	f := pair.running
	r.mu.Unlock()
	for f != nil {
		readCtx, cancel := context.WithTimeout(ctx, liveReadTimeout)
		f.err = r.Reader.Get(readCtx, f.key, f.obj)
		cancel()

		r.mu.Lock()
		close(f.done)
		f = pair.next
		pair.running, pair.next = f, nil
		if f == nil {
			delete(r.flights, id)
		}
		r.mu.Unlock()
	}
}
