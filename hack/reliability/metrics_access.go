package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// metricsAccess is what a Prometheus in the cluster would have: the serving certificate's CA and
// the token of a ServiceAccount bound to the shipped metrics-reader ClusterRole.
type metricsAccess struct {
	// certDir holds tls.crt and tls.key for the managers' --metrics-cert-path.
	certDir string
	pool    *x509.CertPool
	token   string
}

// metricsReaderRole is the ClusterRole config/rbac ships for scrapers.
const metricsReaderRole = "pam-operator-metrics-reader"

// setupMetricsAccess writes a serving certificate for 127.0.0.1 and gives the ServiceAccount
// "scraper" in the operator's namespace the metrics-reader role.
func setupMetricsAccess(ctx context.Context, c client.Client, workDir string) (*metricsAccess, error) {
	access := &metricsAccess{certDir: filepath.Join(workDir, "metrics-certs")}
	if err := os.MkdirAll(access.certDir, 0o700); err != nil {
		return nil, err
	}
	certPEM, err := writeServingCert(access.certDir)
	if err != nil {
		return nil, err
	}
	access.pool = x509.NewCertPool()
	access.pool.AppendCertsFromPEM(certPEM)

	if access.token, err = serviceAccountToken(ctx, c, "scraper"); err != nil {
		return nil, err
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "pam-operator-scraper"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: metricsReaderRole},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: operatorNamespace, Name: "scraper"}},
	}
	if err := c.Create(ctx, binding); err != nil {
		return nil, fmt.Errorf("binding the scraper to %s: %w", metricsReaderRole, err)
	}
	return access, nil
}

// serviceAccountToken creates a ServiceAccount in the operator's namespace and returns a token
// the API server issued for it.
func serviceAccountToken(ctx context.Context, c client.Client, name string) (string, error) {
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: operatorNamespace, Name: name}}
	if err := c.Create(ctx, sa); err != nil {
		return "", fmt.Errorf("creating ServiceAccount %s: %w", name, err)
	}
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: new(int64(3600))}}
	if err := c.SubResource("token").Create(ctx, sa, req); err != nil {
		return "", fmt.Errorf("requesting a token for %s: %w", name, err)
	}
	return req.Status.Token, nil
}

// client returns an HTTPS client that trusts the serving certificate and offers HTTP/2, so a
// test can see that the endpoint declines it.
func (a *metricsAccess) client() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: a.pool, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2: true,
	}}
}

// get fetches url with token as the bearer ("" for none) and returns the status, protocol and body.
func (a *metricsAccess) get(url, token string) (int, string, string, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, "", "", err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := a.client().Do(req)
	if err != nil {
		return 0, "", "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Proto, string(body), err
}

// writeServingCert writes a self-signed certificate for 127.0.0.1 as tls.crt and tls.key.
func writeServingCert(dir string) ([]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "pam-operator metrics"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.WriteFile(filepath.Join(dir, "tls.crt"), certPEM, 0o600); err != nil {
		return nil, err
	}
	return certPEM, os.WriteFile(filepath.Join(dir, "tls.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
}
