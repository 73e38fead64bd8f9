package collective

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Wire format. Every data, leave and abort message carries a fixed
// 40-byte header, little-endian, hex-encoded in the NATS header "Hc" (so
// that the payload goes out without being copied first); heartbeats carry
// it as their payload:
//
//	0  magic "hc", version 1, kind
//	4  from    uint32  sender's rank
//	8  seq     uint64  Tag.Seq            (abort: unused)
//	16 step    uint32  Tag.Step           (abort: culprit rank)
//	20 nchunks uint32  chunks in the whole message
//	24 offset  uint64  where this chunk starts in the message
//	32 total   uint64  bytes in the whole message
//
// The NATS payload is the chunk itself (abort: the reason, as text).
//
// Subjects: rank r receives data and leave/abort messages on
// hpcrun.<job>.d.<r> (one subscription, so that a leave is never handled
// before the data sent ahead of it); heartbeats go to hpcrun.<job>.hb on a
// second connection, so that they never queue behind bulk data.
const (
	headerLen = 40
	headerKey = "Hc"
	// natsHeaderRoom is what the NATS header with our header takes of
	// max_payload ("NATS/1.0\r\nHc: <80 hex digits>\r\n\r\n", rounded up).
	natsHeaderRoom = 128
	wireVersion    = 1
	kindData       = 1
	kindLeave      = 2
	kindAbort      = 3
	kindBeat       = 4
	subjectRoot    = "hpcrun"
	// defaultChunk is the largest message payload by default. NATS stores
	// and forwards whole messages, so 1 MiB messages pipeline a transfer
	// through the server better than a few huge ones.
	defaultChunk = 1 << 20
)

var jobIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

func checkJobID(id string) error {
	if !jobIDPattern.MatchString(id) {
		return fmt.Errorf("collective: job id %q must be non-empty letters, digits, '-' or '_'", id)
	}
	return nil
}

type header struct {
	kind    byte
	from    int
	seq     uint64
	step    uint32
	nchunks int
	offset  int
	total   int
}

func (h header) put(b []byte) {
	b[0], b[1], b[2], b[3] = 'h', 'c', wireVersion, h.kind
	binary.LittleEndian.PutUint32(b[4:], uint32(h.from))
	binary.LittleEndian.PutUint64(b[8:], h.seq)
	binary.LittleEndian.PutUint32(b[16:], h.step)
	binary.LittleEndian.PutUint32(b[20:], uint32(h.nchunks))
	binary.LittleEndian.PutUint64(b[24:], uint64(h.offset))
	binary.LittleEndian.PutUint64(b[32:], uint64(h.total))
}

func parseHeader(b []byte) (header, []byte, error) {
	if len(b) < headerLen || b[0] != 'h' || b[1] != 'c' || b[2] != wireVersion {
		return header{}, nil, errors.New("collective: message without a valid header")
	}
	h := header{
		kind:    b[3],
		from:    int(binary.LittleEndian.Uint32(b[4:])),
		seq:     binary.LittleEndian.Uint64(b[8:]),
		step:    binary.LittleEndian.Uint32(b[16:]),
		nchunks: int(binary.LittleEndian.Uint32(b[20:])),
		offset:  int(binary.LittleEndian.Uint64(b[24:])),
		total:   int(binary.LittleEndian.Uint64(b[32:])),
	}
	return h, b[headerLen:], nil
}

// natsConfig is what dialNATS needs; Connect fills it from Options.
type natsConfig struct {
	URL, Secret, JobID string
	Rank, Size         int
	Timeout            time.Duration
	MaxChunk           int // payload bytes per NATS message; 0: what the server allows
	ServerRank         int // rank that hosts the server (its death cuts us off), or -1
	WaitPeersOnClose   bool
	Logger             *slog.Logger
}

// natsTransport is the Transport over a NATS server.
type natsTransport struct {
	cfg      natsConfig
	data     *nats.Conn // data, leave and abort messages
	ctl      *nats.Conn // heartbeats
	mbox     *mailbox
	chunk    int
	subjects []string // data subject of each rank
	beat     string   // heartbeat subject

	joinMu sync.Mutex
	joined []bool
	nJoin  int
	joinCh chan struct{} // closed when every rank has been heard

	closing  chan struct{}
	beatDone chan struct{}
}

// dialNATS connects to the server, subscribes, and waits until every rank
// of the job has done the same (or Timeout passes).
func dialNATS(ctx context.Context, cfg natsConfig) (*natsTransport, error) {
	if err := checkJobID(cfg.JobID); err != nil {
		return nil, err
	}
	t := &natsTransport{
		cfg:     cfg,
		mbox:    newMailbox(cfg.Rank, cfg.Size, cfg.Timeout),
		joined:  make([]bool, cfg.Size),
		joinCh:  make(chan struct{}),
		closing: make(chan struct{}),
	}
	prefix := subjectRoot + "." + cfg.JobID
	for r := range cfg.Size {
		t.subjects = append(t.subjects, fmt.Sprintf("%s.d.%d", prefix, r))
	}
	t.beat = prefix + ".hb"

	var err error
	if t.data, err = t.connect("data"); err != nil {
		return nil, err
	}
	if t.ctl, err = t.connect("control"); err != nil {
		t.data.Close()
		return nil, err
	}
	t.chunk = defaultChunk
	if cfg.MaxChunk > 0 {
		t.chunk = cfg.MaxChunk
	}
	t.chunk = min(t.chunk, int(t.data.MaxPayload())-natsHeaderRoom)
	if t.chunk < 1 {
		t.closeConns()
		return nil, fmt.Errorf("collective: server max_payload %d is too small", t.data.MaxPayload())
	}

	sub, err := t.data.Subscribe(t.subjects[cfg.Rank], t.onData)
	if err == nil {
		err = sub.SetPendingLimits(-1, -1)
	}
	if err == nil {
		err = t.data.Flush()
	}
	var beatSub *nats.Subscription
	if err == nil {
		beatSub, err = t.ctl.Subscribe(t.beat, t.onBeat)
	}
	if err == nil {
		err = beatSub.SetPendingLimits(-1, -1)
	}
	if err == nil {
		err = t.ctl.Flush()
	}
	if err != nil {
		t.closeConns()
		return nil, fmt.Errorf("collective: subscribe: %w", err)
	}
	t.markJoined(cfg.Rank)

	t.beatDone = make(chan struct{})
	go t.heartbeat()
	if err := t.waitJoin(ctx); err != nil {
		t.stopHeartbeat()
		t.closeConns()
		return nil, err
	}
	t.mbox.startWatch()
	return t, nil
}

func (t *natsTransport) connect(role string) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name(fmt.Sprintf("hpcrun %s rank %d %s", t.cfg.JobID, t.cfg.Rank, role)),
		nats.NoReconnect(),
		nats.Timeout(min(max(t.cfg.Timeout, time.Second), 10*time.Second)),
		// A write to the server that cannot finish (a cut link; the server
		// stalling this producer behind a dead consumer) must not outlive the
		// liveness verdict: without a deadline a publish blocks in the
		// socket write for nats.go's default minute, holding the connection,
		// and the rank never reports the dead peer. With it, the write fails
		// a heartbeat interval after the peer would have been declared dead,
		// and publish returns that verdict (publish prefers mbox.err()).
		nats.FlusherTimeout(max(t.cfg.Timeout, time.Second) + heartbeatInterval(t.cfg.Timeout)),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { t.lost(role, err) }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			// A slow consumer has lost messages: a collective would hang.
			t.mbox.fail(fmt.Errorf("collective: rank %d: NATS %s connection: %w", t.cfg.Rank, role, err))
		}),
	}
	if t.cfg.Secret != "" {
		opts = append(opts, nats.Token(t.cfg.Secret))
	}
	nc, err := nats.Connect(t.cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("collective: rank %d: connect to NATS at %s: %w", t.cfg.Rank, t.cfg.URL, err)
	}
	return nc, nil
}

// lost handles a dropped connection: nothing more will arrive.
func (t *natsTransport) lost(role string, err error) {
	select {
	case <-t.closing:
		return // our own Close
	default:
	}
	if err == nil {
		err = errors.New("connection closed")
	}
	if r := t.cfg.ServerRank; r >= 0 && r != t.cfg.Rank {
		t.mbox.fail(&RankError{Rank: r, Reason: fmt.Sprintf("is unreachable: lost the %s connection to its NATS server: %v", role, err)})
		return
	}
	t.mbox.fail(fmt.Errorf("collective: rank %d lost its %s connection to the NATS server at %s: %w", t.cfg.Rank, role, t.cfg.URL, err))
}

func (t *natsTransport) onData(m *nats.Msg) {
	hb, err := hex.DecodeString(m.Header.Get(headerKey))
	var h header
	if err == nil {
		h, _, err = parseHeader(hb)
	}
	if err == nil && (h.from < 0 || h.from >= t.cfg.Size) {
		err = fmt.Errorf("collective: message from rank %d of %d", h.from, t.cfg.Size)
	}
	if err != nil {
		t.mbox.fail(fmt.Errorf("collective: rank %d got a bad message: %w", t.cfg.Rank, err))
		return
	}
	payload := m.Data
	switch h.kind {
	case kindData:
		err = t.mbox.deliver(h.from, Tag{Seq: h.seq, Step: h.step}, h.offset, h.total, h.nchunks, payload)
	case kindLeave:
		t.mbox.control(h.from, -1, "")
	case kindAbort:
		t.mbox.control(h.from, int(h.step), string(payload))
	default:
		err = fmt.Errorf("collective: unknown message kind %d from rank %d", h.kind, h.from)
	}
	if err != nil {
		t.mbox.fail(err)
	}
}

func (t *natsTransport) onBeat(m *nats.Msg) {
	h, _, err := parseHeader(m.Data)
	if err != nil || h.kind != kindBeat || h.from < 0 || h.from >= t.cfg.Size {
		return
	}
	t.mbox.heard(h.from)
	t.markJoined(h.from)
}

func (t *natsTransport) markJoined(r int) {
	t.joinMu.Lock()
	defer t.joinMu.Unlock()
	if !t.joined[r] {
		t.joined[r] = true
		t.nJoin++
		if t.nJoin == t.cfg.Size {
			close(t.joinCh)
		}
	}
}

// heartbeat announces this rank every heartbeat interval, and every 20ms
// until every rank has joined (a rank that subscribes late must still hear
// from everyone).
func (t *natsTransport) heartbeat() {
	defer close(t.beatDone)
	msg := make([]byte, headerLen)
	header{kind: kindBeat, from: t.cfg.Rank}.put(msg)
	every := heartbeatInterval(t.cfg.Timeout)
	if t.cfg.Timeout <= 0 {
		every = 5 * time.Second
	}
	joining := t.joinCh
	for {
		_ = t.ctl.Publish(t.beat, msg)
		wait := every
		if joining != nil {
			wait = min(every, 20*time.Millisecond)
		}
		select {
		case <-t.closing:
			return
		case <-joining:
			joining = nil
			_ = t.ctl.Publish(t.beat, msg) // the last rank to join hears us at once
		case <-time.After(wait):
		}
	}
}

func (t *natsTransport) stopHeartbeat() {
	select {
	case <-t.closing:
	default:
		close(t.closing)
	}
	<-t.beatDone
}

func (t *natsTransport) waitJoin(ctx context.Context) error {
	limit := t.cfg.Timeout
	if limit <= 0 {
		limit = time.Minute
	}
	timer := time.NewTimer(limit)
	defer timer.Stop()
	select {
	case <-t.joinCh:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("collective: rank %d: waiting for the other ranks to join: %w", t.cfg.Rank, ctx.Err())
	case <-timer.C:
		t.joinMu.Lock()
		defer t.joinMu.Unlock()
		for r, ok := range t.joined {
			if !ok {
				return &RankError{Rank: r, Reason: fmt.Sprintf("did not join within %v", limit), Op: "join"}
			}
		}
		return nil
	}
}

func (t *natsTransport) Rank() int { return t.cfg.Rank }
func (t *natsTransport) Size() int { return t.cfg.Size }

// Send publishes data to rank to in chunks of at most t.chunk bytes.
func (t *natsTransport) Send(ctx context.Context, to int, tag Tag, data []byte) error {
	if to < 0 || to >= t.cfg.Size {
		return fmt.Errorf("collective: send to rank %d of %d", to, t.cfg.Size)
	}
	if err := t.mbox.err(); err != nil {
		return err
	}
	nchunks := max((len(data)+t.chunk-1)/t.chunk, 1)
	h := header{kind: kindData, from: t.cfg.Rank, seq: tag.Seq, step: tag.Step, nchunks: nchunks, total: len(data)}
	for i := range nchunks {
		if err := ctx.Err(); err != nil {
			return err
		}
		lo, hi := i*t.chunk, min((i+1)*t.chunk, len(data))
		h.offset = lo
		if err := t.publish(t.subjects[to], h, data[lo:hi]); err != nil {
			return err
		}
	}
	return nil
}

// publish sends one message: h in the NATS header, payload as the body.
func (t *natsTransport) publish(subject string, h header, payload []byte) error {
	var hb [headerLen]byte
	h.put(hb[:])
	msg := &nats.Msg{Subject: subject, Header: nats.Header{headerKey: {hex.EncodeToString(hb[:])}}, Data: payload}
	if err := t.data.PublishMsg(msg); err != nil {
		if merr := t.mbox.err(); merr != nil {
			return merr
		}
		return fmt.Errorf("collective: rank %d: publish: %w", t.cfg.Rank, err)
	}
	return nil
}

func (t *natsTransport) Recv(ctx context.Context, from int, tag Tag) ([]byte, error) {
	return t.mbox.recv(ctx, from, tag)
}

func (t *natsTransport) RecvInto(ctx context.Context, from int, tag Tag, dst []byte) (int, error) {
	return t.mbox.recvInto(ctx, from, tag, dst)
}

// Abort tells every peer that the job is broken because of cause.
func (t *natsTransport) Abort(cause error) {
	select {
	case <-t.closing:
		return
	default:
	}
	t.sendControl(cause)
}

// sendControl sends a leave (nil cause) or abort message to every peer.
func (t *natsTransport) sendControl(cause error) error {
	culprit, reason := closeReason(t.cfg.Rank, cause)
	h := header{kind: kindLeave, from: t.cfg.Rank, nchunks: 1}
	var payload []byte
	if culprit >= 0 {
		h.kind, h.step, payload = kindAbort, uint32(culprit), []byte(reason)
		h.total = len(payload)
	}
	for r, subj := range t.subjects {
		if r != t.cfg.Rank {
			if err := t.publish(subj, h, payload); err != nil {
				return err
			}
		}
	}
	return nil
}

// Close tells every peer that this rank leaves (or aborts, with cause),
// stops heartbeating and closes the connections. The rank hosting the
// server first waits, at most Timeout, for every peer to leave, so that
// they are not cut off.
func (t *natsTransport) Close(cause error) error {
	select {
	case <-t.closing:
		return nil
	default:
	}
	err := t.sendControl(cause)
	if err == nil {
		// Best effort: the server (in rank 0) may go away as soon as our
		// message has reached it, before the flush is answered.
		if ferr := t.data.FlushTimeout(max(t.cfg.Timeout, time.Second)); ferr != nil && t.cfg.Logger != nil {
			t.cfg.Logger.Debug("flush on close", "err", ferr)
		}
	}
	if err == nil && t.cfg.WaitPeersOnClose {
		t.waitPeersLeft()
	}
	t.stopHeartbeat()
	t.mbox.stopWatching()
	t.closeConns()
	t.mbox.fail(errClosed)
	if err != nil {
		return fmt.Errorf("collective: rank %d: close: %w", t.cfg.Rank, err)
	}
	return nil
}

// waitPeersLeft polls until every peer has left (or been declared dead),
// for at most Timeout. Peers that are still running when a job breaks
// learn it from this rank's abort message and leave in turn.
func (t *natsTransport) waitPeersLeft() {
	limit := max(t.cfg.Timeout, time.Second)
	_ = pollUntil(context.Background(), limit, func() bool {
		for r := range t.cfg.Size {
			if r != t.cfg.Rank && !t.mbox.gone(r) {
				return false
			}
		}
		return true
	})
}

func (t *natsTransport) closeConns() {
	select {
	case <-t.closing:
	default:
		close(t.closing)
	}
	if t.data != nil {
		t.data.Close()
	}
	if t.ctl != nil {
		t.ctl.Close()
	}
}

// pollUntil calls done every few milliseconds until it reports true (nil),
// limit passes or ctx ends (an error).
func pollUntil(ctx context.Context, limit time.Duration, done func() bool) error {
	deadline := time.Now().Add(limit)
	wait := time.Millisecond
	for !done() {
		if time.Now().After(deadline) {
			return fmt.Errorf("gave up after %v", limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(wait*2, 50*time.Millisecond)
	}
	return nil
}
