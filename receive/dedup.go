package receive

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"sync"
	"time"
)

// ErrNotOwner is returned by a [DedupStore]'s Complete for a claim that is
// no longer the owner's: its lease passed and another claim took the
// delivery over (which may then run the handler a second time: give
// claims a lease longer than the handler can take).
var ErrNotOwner = errors.New("receive: the dedup claim is no longer its delivery's owner")

// This file holds the durable de-duplication AdCP 3.2 asks of a receiver:
// one owner per (sender, idempotency_key) before the buyer's handler runs,
// 2xx for a completed duplicate, 503 while an identical one is being
// processed, 409 for the same key with a changed canonical payload.

// DedupVerdict is what a [DedupStore] decides about one delivery.
type DedupVerdict int

const (
	// DedupFirst: the caller now owns the delivery. Run the handler, then
	// Complete the claim (or Release it, so that the sender's retry runs
	// it again).
	DedupFirst DedupVerdict = iota
	// DedupInProgress: an identical delivery is being processed by another
	// owner whose lease is live. Answer 503 (retryable).
	DedupInProgress
	// DedupCompleted: an identical delivery was processed. Answer 2xx
	// without running the handler again.
	DedupCompleted
	// DedupConflict: the key is bound to another canonical payload. Answer
	// 409; the first binding stands.
	DedupConflict
	// DedupOverCap: the sender holds as many keys as the store allows.
	// Answer 429; nothing was recorded.
	DedupOverCap
)

// DedupClaim is a delivery a [DedupStore] was asked about: its verdict
// and, for DedupFirst, the owner's token.
type DedupClaim struct {
	Verdict     DedupVerdict
	Sender, Key string
	Token       uint64
}

// DedupStore binds each (sender, idempotency key) to the SHA-256 of its
// payload's RFC 8785 canonical form and says who processes it. The sender
// is the authenticated sender identity (the verified keyid's seller, or
// the legacy credential's binding), never a payload field.
// Implementations must be safe for concurrent use, and Claim must decide
// and record atomically.
type DedupStore interface {
	// Claim decides about a delivery: the first one of a key becomes its
	// owner for lease, which must be positive (another claim may take it
	// over once the lease passes, the owner having died); an identical one
	// is in progress or completed; a changed one conflicts.
	Claim(ctx context.Context, sender, key string, fingerprint [32]byte, now time.Time, lease time.Duration) (DedupClaim, error)
	// Complete records that the owner processed the delivery; the binding
	// is kept for the store's retention from now. A claim taken over since
	// is [ErrNotOwner].
	Complete(ctx context.Context, c DedupClaim, now time.Time) error
	// Release gives up the owner's claim (its handler failed): the
	// sender's identical retry becomes the owner; the key stays bound to
	// its payload, so a changed one still conflicts.
	Release(ctx context.Context, c DedupClaim, now time.Time) error
}

// DedupRetentionMin is the least time a completed binding is kept: AdCP
// 3.2's 24 h floor (keep it for the sender's advertised retry horizon if
// that is longer).
const DedupRetentionMin = 24 * time.Hour

// errLease is Claim's error for a lease that is not positive.
var errLease = errors.New("receive: a dedup claim's lease must be positive: a zero lease would let two claims own one delivery")

// newToken is a random owner token.
func newToken() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint64(b[:]) | 1 // never 0
}

// MemoryDedupStore is an in-process [DedupStore], for development and
// tests: it forgets everything when the process ends, and pods do not
// share it, which AdCP 3.2 calls non-conformant in production (use
// receive/pgstore's). The zero value is ready to use.
type MemoryDedupStore struct {
	// Retention is how long a completed binding is kept. Defaults to, and
	// may not be under, DedupRetentionMin.
	Retention time.Duration
	// PerSenderCap bounds the keys held per sender. Defaults to 1,000,000.
	PerSenderCap int

	mu      sync.Mutex
	entries map[[2]string]*dedupEntry
	senders map[string]int
}

type dedupEntry struct {
	fingerprint [32]byte
	done        bool
	token       uint64
	until       time.Time // in progress: the lease; done: the retention
}

// Claim implements [DedupStore].
func (s *MemoryDedupStore) Claim(_ context.Context, sender, key string, fp [32]byte, now time.Time, lease time.Duration) (DedupClaim, error) {
	if lease <= 0 {
		return DedupClaim{}, errLease
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.entries == nil {
		s.entries, s.senders = map[[2]string]*dedupEntry{}, map[string]int{}
	}
	c := DedupClaim{Sender: sender, Key: key}
	id := [2]string{sender, key}
	e := s.entries[id]
	if e != nil && e.done && !now.Before(e.until) { // retention passed
		delete(s.entries, id)
		s.senders[sender]--
		e = nil
	}
	switch {
	case e == nil:
		limit := s.PerSenderCap
		if limit <= 0 {
			limit = 1_000_000
		}
		if s.senders[sender] >= limit {
			s.forgetLocked(sender, now)
		}
		if s.senders[sender] >= limit {
			c.Verdict = DedupOverCap
			return c, nil
		}
		e = &dedupEntry{fingerprint: fp}
		s.entries[id] = e
		s.senders[sender]++
	case e.fingerprint != fp:
		c.Verdict = DedupConflict
		return c, nil
	case e.done:
		c.Verdict = DedupCompleted
		return c, nil
	case now.Before(e.until):
		c.Verdict = DedupInProgress
		return c, nil
	}
	// New, or an owner whose lease passed: the caller owns it now.
	e.token, e.until = newToken(), now.Add(lease)
	c.Verdict, c.Token = DedupFirst, e.token
	return c, nil
}

// forgetLocked drops sender's bindings whose retention passed, and claims
// abandoned for as long.
func (s *MemoryDedupStore) forgetLocked(sender string, now time.Time) {
	keep := max(s.Retention, DedupRetentionMin)
	for id, e := range s.entries {
		if id[0] == sender && (e.done && !now.Before(e.until) || !e.done && !now.Before(e.until.Add(keep))) {
			delete(s.entries, id)
			s.senders[sender]--
		}
	}
}

// Complete implements [DedupStore].
func (s *MemoryDedupStore) Complete(_ context.Context, c DedupClaim, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[[2]string{c.Sender, c.Key}]
	if e == nil || e.token != c.Token || e.done {
		return ErrNotOwner
	}
	e.done, e.until = true, now.Add(max(s.Retention, DedupRetentionMin))
	return nil
}

// Release implements [DedupStore].
func (s *MemoryDedupStore) Release(_ context.Context, c DedupClaim, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.entries[[2]string{c.Sender, c.Key}]; e != nil && e.token == c.Token && !e.done {
		e.token, e.until = 0, now // lapsed: the next identical claim owns it
	}
	return nil
}
