package credentials_test

import (
	"context"
	"testing"

	. "github.com/onsi/gomega"

	pamv1 "github.com/pam-operator/pam-operator/api/v1alpha1"
	"github.com/pam-operator/pam-operator/internal/credentials"
)

// TestBasicOverPlainHTTPIsRefusedBeforeTheSecretIsRead: a server stored before admission
// refused basic over http (or written around it) gets no client, and its Secret is not even
// read: the password has nowhere to go.
func TestBasicOverPlainHTTPIsRefusedBeforeTheSecretIsRead(t *testing.T) {
	g := NewWithT(t)
	reads := &secretReads{Reader: k8sClient}
	c, server, _ := connectorOfOwnServer(t, reads)
	for _, url := range []string{"http://pam.invalid", "HTTP://pam.invalid:8086/mim"} {
		server.Spec.URL = url // as stored before the rule: admission refuses it now
		_, err := c.Connect(context.Background(), server)
		ce, ok := credentials.AsError(err)
		g.Expect(ok).To(BeTrue(), "want a *credentials.Error, got %v", err)
		g.Expect(ce.Reason).To(Equal(pamv1.ReasonInsecureTransport))
		g.Expect(ce.Message).NotTo(ContainSubstring("first-password"))
	}
	g.Expect(reads.n()).To(BeZero(), "the Secret of a server refused for its transport was read")
}

// TestNamespacedServersOff: with --namespaced-servers=false, a PamServer is refused both when an
// elevation names it and when its own reconciler checks it, before its Secret is read.
func TestNamespacedServersOff(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	reads := &secretReads{Reader: k8sClient}
	c, server, _ := connectorOfOwnServer(t, reads)
	c.RefuseNamespacedServers = true

	el := &pamv1.PamElevation{}
	el.Namespace, el.Spec.ServerRef = server.Namespace, pamv1.ServerReference{Name: server.Name}
	_, err := c.Server(ctx, el)
	ce, ok := credentials.AsError(err)
	g.Expect(ok).To(BeTrue(), "want a *credentials.Error, got %v", err)
	g.Expect(ce.Reason).To(Equal(pamv1.ReasonServerNotAllowed))

	_, _, err = c.Check(ctx, server)
	ce, ok = credentials.AsError(err)
	g.Expect(ok).To(BeTrue(), "want a *credentials.Error, got %v", err)
	g.Expect(ce.Reason).To(Equal(pamv1.ReasonServerNotAllowed))
	g.Expect(reads.n()).To(BeZero())
}
