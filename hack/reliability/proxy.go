package main

import (
	"io"
	"net"
	"sync"
	"time"
)

// cutProxy forwards TCP from the managers to kube-apiserver and can cut it: every open
// connection is reset and new ones are refused for a while. To the manager that is the API
// server restarting: watches break, requests fail, and it must resume where it was.
type cutProxy struct {
	ln       net.Listener
	upstream string

	mu        sync.Mutex
	conns     map[net.Conn]struct{}
	downUntil time.Time
}

func newCutProxy(upstream string) (*cutProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &cutProxy{ln: ln, upstream: upstream, conns: map[net.Conn]struct{}{}}
	go p.serve()
	return p, nil
}

func (p *cutProxy) addr() string { return p.ln.Addr().String() }

func (p *cutProxy) serve() {
	for {
		down, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		refused := time.Now().Before(p.downUntil)
		p.mu.Unlock()
		if refused {
			_ = down.Close()
			continue
		}
		up, err := net.Dial("tcp", p.upstream)
		if err != nil {
			_ = down.Close()
			continue
		}
		p.track(down, up)
		go p.pipe(down, up)
		go p.pipe(up, down)
	}
}

func (p *cutProxy) track(conns ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range conns {
		p.conns[c] = struct{}{}
	}
}

func (p *cutProxy) pipe(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	_ = dst.Close()
	_ = src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}

// cut resets every connection and refuses new ones for d.
func (p *cutProxy) cut(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.downUntil = time.Now().Add(d)
	for c := range p.conns {
		_ = c.Close()
	}
}

func (p *cutProxy) close() { _ = p.ln.Close() }
