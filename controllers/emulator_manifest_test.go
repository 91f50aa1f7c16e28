package controllers_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// emulatorManifest builds config/emulator with the kustomize in ./bin and returns its documents
// and the Deployment among them.
func emulatorManifest(t *testing.T) ([]byte, *appsv1.Deployment) {
	t.Helper()
	out, err := exec.Command(filepath.Join("..", "bin", "kustomize"), "build", filepath.Join("..", "config", "emulator")).Output()
	if err != nil {
		t.Fatalf("kustomize build config/emulator: %v (run make test, which builds bin/kustomize)", err)
	}
	var deployment *appsv1.Deployment
	for _, doc := range strings.Split(string(out), "\n---\n") {
		if strings.Contains(doc, "kind: Deployment") {
			deployment = &appsv1.Deployment{}
			if err := yaml.UnmarshalStrict([]byte(doc), deployment); err != nil {
				t.Fatal(err)
			}
		}
	}
	if deployment == nil {
		t.Fatal("config/emulator has no Deployment")
	}
	return out, deployment
}

// TestEmulatorManifestApplies applies config/emulator, with the two Secrets it names, to a
// namespace that enforces the restricted Pod Security profile, and creates a Pod from its
// template there: the API server's validation and Pod Security admission accept it as shipped.
func TestEmulatorManifestApplies(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	manifest, deployment := emulatorManifest(t)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "e2e-",
		Labels: map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}}}
	g.Expect(k8sClient.Create(ctx, ns)).To(Succeed())

	cert, key := selfSignedPEM(t, "pam-emulator")
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "pam-emulator-tls"},
		Type: corev1.SecretTypeTLS, Data: map[string][]byte{"tls.crt": cert, "tls.key": key}})
	create(t, basicSecret(ns.Name, "pam-emulator-credentials", pamUser, pamPassword))

	cmd := exec.Command(filepath.Join("..", "bin", "kubectl"), "apply", "--server-side", "-n", ns.Name, "-f", "-")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfigPath)
	cmd.Stdin = bytes.NewReader(manifest)
	applied, err := cmd.CombinedOutput()
	g.Expect(err).NotTo(HaveOccurred(), "kubectl apply --server-side:\n%s", applied)
	g.Expect(string(applied)).To(ContainSubstring("deployment.apps/pam-emulator serverside-applied"))
	g.Expect(string(applied)).To(ContainSubstring("service/pam-emulator serverside-applied"))

	// Nothing here runs Pods: one from the template shows what admission makes of it.
	expectHardenedPod(g, ns.Name, "pam-emulator", deployment.Spec.Template.Spec)
}

// TestEmulatorManifestArgsServe runs the emulator program with the container's own args, as the
// kubelet would (its $(VAR) references expanded from the Secret's values, the TLS mount in a
// temporary directory, a free loopback port), and logs in as the Secret's account over https:
// the args the manifest ships are ones the program accepts and serves with.
func TestEmulatorManifestArgsServe(t *testing.T) {
	g := NewWithT(t)
	_, deployment := emulatorManifest(t)
	c := deployment.Spec.Template.Spec.Containers[0]
	g.Expect(c.VolumeMounts).To(HaveLen(1))
	mount := t.TempDir()
	cert, key := selfSignedPEM(t, "127.0.0.1")
	g.Expect(os.WriteFile(filepath.Join(mount, "tls.crt"), cert, 0o600)).To(Succeed())
	g.Expect(os.WriteFile(filepath.Join(mount, "tls.key"), key, 0o600)).To(Succeed())

	secret := map[string]string{"username": pamUser, "password": pamPassword}
	env := map[string]string{}
	for _, e := range c.Env {
		g.Expect(e.ValueFrom.SecretKeyRef.Name).To(Equal("pam-emulator-credentials"))
		env[e.Name] = secret[e.ValueFrom.SecretKeyRef.Key]
	}
	reference := regexp.MustCompile(`\$\((\w+)\)`)
	var args []string
	for _, arg := range c.Args {
		arg = reference.ReplaceAllStringFunc(arg, func(ref string) string { return env[ref[2:len(ref)-1]] })
		arg = strings.ReplaceAll(arg, c.VolumeMounts[0].MountPath, mount)
		if strings.HasPrefix(arg, "--listen=") {
			arg = "--listen=127.0.0.1:0"
		}
		args = append(args, arg)
	}

	binary := filepath.Join(t.TempDir(), "pam-emulator")
	if out, err := exec.Command("go", "build", "-o", binary, "../hack/pam-emulator").CombinedOutput(); err != nil {
		t.Fatalf("building hack/pam-emulator: %v\n%s", err, out)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, binary, args...)
	stderr, err := cmd.StderrPipe()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(cmd.Start()).To(Succeed())
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })

	// The program says where it serves once it listens.
	serving := regexp.MustCompile(`serving the MIM PAM REST API at (https://\S+)`)
	var base string
	lines := bufio.NewScanner(stderr)
	for base == "" && lines.Scan() {
		if m := serving.FindStringSubmatch(lines.Text()); m != nil {
			base = m[1]
		}
	}
	g.Expect(base).NotTo(BeEmpty(), "the emulator did not start: %v", lines.Err())
	go func() { _, _ = io.Copy(io.Discard, stderr) }()

	pool := x509.NewCertPool()
	g.Expect(pool.AppendCertsFromPEM(cert)).To(BeTrue())
	httpClient := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	req, err := http.NewRequest(http.MethodGet, base+"pamroles", nil)
	g.Expect(err).NotTo(HaveOccurred())
	req.SetBasicAuth(pamUser, pamPassword)
	resp, err := httpClient.Do(req)
	g.Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	g.Expect(resp.StatusCode).To(Equal(http.StatusOK), "%s", body)
	g.Expect(string(body)).To(ContainSubstring("E2E Admins"))
}

// selfSignedPEM returns a certificate for host (a DNS name or an IP address) and its key, PEM.
func selfSignedPEM(t *testing.T, host string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{host}}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.DNSNames, tmpl.IPAddresses = nil, []net.IP{ip}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}
