package collective

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// ServerOptions configures an embedded NATS server.
type ServerOptions struct {
	// Host is the address to listen on: "127.0.0.1" (the default) for a
	// job on one machine, "0.0.0.0" when ranks on other nodes connect.
	Host string
	// AdvertiseHost is the host name or address put in URL(), for when
	// Host is a wildcard; default Host.
	AdvertiseHost string
	// Port to listen on; 0 picks a free one.
	Port int
	// Secret is the token every client must present. Required.
	Secret string
	// MaxPayload is the largest message the server accepts; default 8 MiB
	// (transports still chunk below it).
	MaxPayload int
	Logger     *slog.Logger
}

// DefaultMaxPayload is the embedded server's max_payload.
const DefaultMaxPayload = 8 << 20

// Server is an embedded nats-server.
type Server struct {
	ns  *server.Server
	url string
}

// StartServer starts an embedded NATS server that refuses clients without
// the secret, and waits until it accepts connections.
func StartServer(o ServerOptions) (*Server, error) {
	if o.Secret == "" {
		return nil, errors.New("collective: an embedded NATS server needs a secret")
	}
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.AdvertiseHost == "" {
		o.AdvertiseHost = o.Host
	}
	if o.MaxPayload <= 0 {
		o.MaxPayload = DefaultMaxPayload
	}
	port := o.Port
	if port == 0 {
		port = server.RANDOM_PORT
	}
	opts := &server.Options{
		ServerName:    "hpcrun",
		Host:          o.Host,
		Port:          port,
		Authorization: o.Secret,
		MaxPayload:    int32(o.MaxPayload),
		// A receiver may fall behind by a whole large message; the server
		// drops a client whose outbound queue exceeds MaxPending.
		MaxPending:            1 << 30,
		WriteDeadline:         time.Minute,
		NoLog:                 true,
		NoSigs:                true,
		DisableShortFirstPing: true,
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("collective: embedded NATS server: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("collective: embedded NATS server on %s:%d did not start", o.Host, o.Port)
	}
	addr, ok := ns.Addr().(*net.TCPAddr)
	if !ok {
		ns.Shutdown()
		return nil, errors.New("collective: embedded NATS server has no TCP address")
	}
	s := &Server{ns: ns, url: "nats://" + net.JoinHostPort(o.AdvertiseHost, strconv.Itoa(addr.Port))}
	if o.Logger != nil {
		o.Logger.Info("embedded NATS server started", "url", s.url, "max_payload", o.MaxPayload)
	}
	return s, nil
}

// URL is where clients connect (without credentials).
func (s *Server) URL() string { return s.url }

// Shutdown stops the server and waits until it has.
//
// It waits at most shutdownWait: the server's own Shutdown waits for every
// client goroutine, and one writing to a peer whose link is gone blocks
// until WriteDeadline (a minute), which would keep a failing rank alive
// long after it has reported the dead peer.
func (s *Server) Shutdown() {
	done := make(chan struct{})
	go func() {
		s.ns.Shutdown()
		s.ns.WaitForShutdown()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(shutdownWait):
	}
}

const shutdownWait = 2 * time.Second
