package controllers_test

import (
	"context"
	"fmt"
	"testing"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/controllers"
)

// A deletion that begins while a thousand periodic syncs and a thousand other changes wait in
// controller-runtime's priority queue is handed to the next free worker, ahead of all of them.
func TestDeletionIsQueuedAheadOfWaitingSyncs(t *testing.T) {
	g := NewWithT(t)
	q := priorityqueue.New[reconcile.Request]("deletions-first")
	defer q.ShutDown()
	low, normal := handler.LowPriority, 0
	for i := range 1000 {
		q.AddWithOpts(priorityqueue.AddOpts{Priority: &low},
			reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "team", Name: fmt.Sprintf("idle-%04d", i)}})
		q.AddWithOpts(priorityqueue.AddOpts{Priority: &normal},
			reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "team", Name: fmt.Sprintf("edited-%04d", i)}})
	}

	before := &pamv1.PamElevation{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "revoked"}}
	after := before.DeepCopy()
	now := metav1.Now()
	after.DeletionTimestamp = &now
	events := (&controllers.PamElevationReconciler{}).ElevationEvents()
	events.Update(context.Background(), event.UpdateEvent{ObjectOld: before, ObjectNew: after}, q)
	// The operator's own status change of another elevation queues nothing.
	synced := before.DeepCopy()
	synced.Name = "synced"
	statusOnly := synced.DeepCopy()
	statusOnly.Status.RequestStatus = "Active"
	events.Update(context.Background(), event.UpdateEvent{ObjectOld: synced, ObjectNew: statusOnly}, q)
	g.Expect(q.Len()).To(Equal(2001))
	// A user's edit is queued, behind the deletion.
	labeled := statusOnly.DeepCopy()
	labeled.Labels = map[string]string{"team": "b"}
	events.Update(context.Background(), event.UpdateEvent{ObjectOld: statusOnly, ObjectNew: labeled}, q)
	g.Expect(q.Len()).To(Equal(2002))

	item, priority, shutdown := q.GetWithPriority()
	g.Expect(shutdown).To(BeFalse())
	g.Expect(item.Name).To(Equal("revoked"))
	g.Expect(priority).To(BeNumerically(">", normal))
}
