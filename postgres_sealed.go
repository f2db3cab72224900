package webhook

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// This file holds encryption at rest on Postgres (PostgresConfig.Encryption):
// sealing a delivery's secrets as it is written, opening them as it is
// read, and comparing a key's payload binding without the plaintext.

// secrets are the values of a row that encryption at rest seals, as a
// statement's parameters take them.
type secrets struct {
	body, fingerprint, credentials []byte
	headers                        *string // JSON; nil once sealed
	sealedWith                     *string
	sealedHeaders                  []byte
}

// seal seals v's secrets for the delivery (key, url) with the current
// key: the body, the payload fingerprint, the legacy credentials and the
// headers (moved to sealedHeaders), each bound to its column and to the
// delivery. Without a ring it does nothing.
func (r *EncryptionKeys) sealSecrets(key, url string, v *secrets) {
	if !r.sealing() {
		return
	}
	id := r.Current()
	v.sealedWith = &id
	v.body = r.seal(sealBody, key, url, v.body)
	if v.fingerprint != nil { // rows accepted before the payload binding have none
		v.fingerprint = r.seal(sealFingerprint, key, url, v.fingerprint)
	}
	if v.credentials != nil {
		v.credentials = r.seal(sealCredentials, key, url, v.credentials)
	}
	if v.headers != nil {
		v.sealedHeaders = r.seal(sealHeaders, key, url, []byte(*v.headers))
		v.headers = nil
	}
}

// sealParams seals p's secrets (those of d) when the supervisor encrypts.
func (s *PostgresSupervisor) sealParams(p *enqueueParams, d *prepared) {
	if !s.enc.sealing() {
		return
	}
	v := secrets{body: p.Body, fingerprint: p.PayloadSHA256, credentials: p.AuthCredentials, headers: p.Headers}
	s.enc.sealSecrets(d.key, d.url, &v)
	p.Body, p.PayloadSHA256, p.AuthCredentials, p.Headers = v.body, v.fingerprint, v.credentials, v.headers
	p.SealedWith, p.SealedHeaders = v.sealedWith, v.sealedHeaders
}

// samePayload reports, for a key bound before to a delivery with URL
// sameURL (nil: the key was free) and fingerprint fp (sealed with
// sealedWith, or plain), whether d is the same payload to the same URL.
func (s *PostgresSupervisor) samePayload(d *prepared, sameURL *bool, fp []byte, sealedWith *string) (*bool, error) {
	if sameURL == nil || !*sameURL {
		return sameURL, nil
	}
	if sealedWith != nil {
		if s.enc == nil {
			return nil, fmt.Errorf("%w: idempotency key %s is bound to a delivery sealed with key %q, and this supervisor has no PostgresConfig.Encryption to compare its payload with", ErrCannotDecrypt, d.key, *sealedWith)
		}
		plain, err := s.enc.open(sealFingerprint, d.key, d.url, fp)
		if err != nil {
			return nil, err
		}
		fp = plain
	}
	same := bytes.Equal(fp, d.fp[:])
	return &same, nil
}

// openedRow is what a reader gets of a row's secrets.
type openedRow struct {
	body, credentials, headers []byte // headers: JSON
}

// openRow returns the row's secrets, decrypted when sealedWith is set. A
// sealed row
// read by a supervisor without Encryption, or one that does not decrypt,
// is an error matching ErrCannotDecrypt that says why.
func (s *PostgresSupervisor) openRow(key, url string, v sealedValues, body, credentials, headers []byte) (openedRow, error) {
	if v.SealedWith == nil {
		return openedRow{body, credentials, headers}, nil
	}
	if s.enc == nil {
		return openedRow{}, fmt.Errorf("%w: it is sealed with key %q, and this supervisor has no PostgresConfig.Encryption", ErrCannotDecrypt, *v.SealedWith)
	}
	var out openedRow
	var err error
	if out.body, err = s.enc.open(sealBody, key, url, body); err != nil {
		return openedRow{}, err
	}
	if credentials != nil {
		if out.credentials, err = s.enc.open(sealCredentials, key, url, credentials); err != nil {
			return openedRow{}, err
		}
	}
	if v.SealedHeaders != nil {
		if out.headers, err = s.enc.open(sealHeaders, key, url, v.SealedHeaders); err != nil {
			return openedRow{}, err
		}
	}
	return out, nil
}

// writeSequence writes seq over the 0 at offset at of a template body, as
// the enqueue statement does for a body that is not sealed.
func writeSequence(body []byte, at int, seq int64) []byte {
	n := strconv.AppendInt(nil, seq, 10)
	out := make([]byte, 0, len(body)+len(n)-1)
	out = append(out, body[:at]...)
	out = append(out, n...)
	return append(out, body[at+1:]...)
}

// insertSealedTemplate is insert for a sealed body whose sequence number
// is drawn by the enqueue statement: the statement and the body's sealing
// with its number (sealTemplates) run in one transaction of their own (a
// savepoint of tx), so that an error leaves nothing, not even in the
// caller's transaction, and no worker ever sees the template. An OpenDrop
// refusal is recorded after it is rolled back.
func (s *PostgresSupervisor) insertSealedTemplate(ctx context.Context, tx pgx.Tx, d prepared, now time.Time) (Receipt, bool, error) {
	sub, err := s.beginIn(ctx, tx)
	if err != nil {
		return Receipt{}, false, dbError("enqueue", err)
	}
	defer sub.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // after Commit it is a no-op
	r, dup, refused, err := s.insertIn(ctx, sub, true, tx != nil, d, now)
	if err == nil && refused == nil {
		err = s.sealTemplates(ctx, sub, []prepared{d}, []Receipt{r}, []bool{dup})
	}
	if err != nil {
		return Receipt{}, false, err
	}
	if refused != nil {
		if err := sub.Rollback(context.WithoutCancel(ctx)); err != nil {
			return Receipt{}, false, dbError("enqueue", err)
		}
		var q querier = s.db
		if tx != nil {
			q = tx
		}
		return Receipt{}, false, s.refuse(ctx, q, d, now, refused.until)
	}
	if err := sub.Commit(ctx); err != nil {
		if tx == nil && outcomeUnknown(err) {
			return Receipt{}, false, fmt.Errorf("%w: %w", ErrOutcomeUnknown, dbError("enqueue", err))
		}
		return Receipt{}, false, dbError("enqueue", err)
	}
	if tx == nil && !dup { // in the caller's transaction, the statement notified with it
		s.wakeWorkers()
	}
	return r, dup, nil
}

// sealTemplates, in the transaction q of an enqueue, replaces the sealed
// template body of each new delivery of ds that had its sequence number
// drawn by the statement (MCPWebhook.WriteSequenceNumber) with the final
// body, sealed: a sealed body is never a template, so nothing outside the
// ciphertext (a sequence_number column changed by someone without the
// ring, say) can alter what is sent. Without encryption the statement
// wrote the number itself.
func (s *PostgresSupervisor) sealTemplates(ctx context.Context, q querier, ds []prepared, rs []Receipt, dup []bool) error {
	if !s.enc.sealing() {
		return nil
	}
	for i := range ds {
		d := &ds[i]
		if d.seqAt <= 0 || dup[i] || rs[i].ID == "" {
			continue
		}
		id, err := strconv.ParseInt(rs[i].ID, 10, 64)
		if err != nil {
			return err
		}
		body := s.enc.seal(sealBody, d.key, d.url, writeSequence(d.body, d.seqAt, rs[i].Sequence))
		if _, err := exec(ctx, q, s.q.rewriteBody, rewriteBodyParams{ID: id, Body: body}); err != nil {
			return dbError("enqueue", err)
		}
	}
	return nil
}

// ReencryptDefaultBatch is how many rows one Reencrypt transaction
// rewrites unless told otherwise.
const ReencryptDefaultBatch = 200

// ReencryptResult says what [PostgresSupervisor.Reencrypt] did.
type ReencryptResult struct {
	// Reencrypted counts the rows rewritten under the current key
	// (plain-text rows included).
	Reencrypted int64
	// Failed counts the rows left as they were because they do not
	// decrypt (see [ErrCannotDecrypt]); FailedIDs lists the first 100.
	// Their deliveries fail alone when attempted.
	Failed    int64
	FailedIDs []string
	// Batches counts the transactions.
	Batches int
}

// Reencrypt rewrites, under the current key of [PostgresConfig.Encryption],
// every delivery whose secrets are stored in plain text or under another
// key of the ring, finished deliveries included: after it, a key that is
// no longer current can be dropped from every process's ring. It works
// in batches of batch rows (0: [ReencryptDefaultBatch]), each one short
// transaction that skips rows a worker holds locked at that moment, and
// sweeps again until no row is left, so it runs while workers deliver.
// Processes whose ring still has an older current key write new rows
// under it, which keeps Reencrypt sweeping: roll the new ring out to every
// process first, then run it. It returns when every row is under the
// current key (but those that do not decrypt), or with ctx's error,
// having committed the batches it finished.
func (s *PostgresSupervisor) Reencrypt(ctx context.Context, batch int) (ReencryptResult, error) {
	var res ReencryptResult
	if !s.enc.sealing() {
		return res, badConfig("PostgresConfig.Encryption", "has no current key; Reencrypt rewrites rows under it")
	}
	if batch < 0 || batch > BatchMax {
		return res, badConfig("batch", "is %d; use 1 to %d, or 0 for %d", batch, BatchMax, ReencryptDefaultBatch)
	}
	batch = cmp.Or(batch, ReencryptDefaultBatch)
	failed := map[int64]bool{}
	for sweep := 0; ; sweep++ {
		for after := int64(0); ; {
			last, err := s.reencryptBatch(ctx, after, batch, failed, &res)
			if err != nil {
				return res, err
			}
			if last == 0 {
				break
			}
			after = last
		}
		var left bool
		if err := queryRow(ctx, s.db, s.q.reencryptLeft, reencryptLeftParams{Current: s.enc.Current(), Failed: slices.Collect(maps.Keys(failed))}).Scan(&left); err != nil {
			return res, dbError("reencrypt", err)
		}
		if !left {
			return res, nil
		}
		// Rows a worker held locked, or new ones under an old key: look
		// again shortly.
		select {
		case <-ctx.Done():
			return res, dbError("reencrypt", ctx.Err())
		case <-time.After(min(10*time.Millisecond<<min(sweep, 7), time.Second)):
		}
	}
}

// reencryptBatch rewrites the rows after after, up to limit of them, in
// one transaction, and returns the last row it read (0: none). Rows that
// do not decrypt are added to failed (and res) once, and left alone.
func (s *PostgresSupervisor) reencryptBatch(ctx context.Context, after int64, limit int, failed map[int64]bool, res *ReencryptResult) (int64, error) {
	tx, err := s.db.Begin(ctx)
	if err != nil {
		return 0, dbError("reencrypt", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // after Commit it is a no-op
	rows, err := collect[reencryptRow](query(ctx, tx, s.q.reencryptRead, reencryptReadParams{After: after, Current: s.enc.Current(), Limit: limit}))
	if err != nil || len(rows) == 0 {
		return 0, dbError("reencrypt", err)
	}
	var w reencryptRows
	for i := range rows {
		r := &rows[i]
		if failed[r.ID] {
			continue
		}
		v, err := s.openRaw(r)
		if err != nil {
			failed[r.ID] = true
			res.Failed++
			if len(res.FailedIDs) < 100 {
				res.FailedIDs = append(res.FailedIDs, strconv.FormatInt(r.ID, 10))
			}
			continue
		}
		s.enc.sealSecrets(r.IdempotencyKey, r.URL, &v)
		w.ID, w.Body, w.AuthCredentials = append(w.ID, r.ID), append(w.Body, v.body), append(w.AuthCredentials, v.credentials)
		w.PayloadSHA256, w.SealedWith, w.SealedHeaders = append(w.PayloadSHA256, v.fingerprint), append(w.SealedWith, *v.sealedWith), append(w.SealedHeaders, v.sealedHeaders)
	}
	if len(w.ID) > 0 {
		if _, err := exec(ctx, tx, s.q.reencryptWrite, w); err != nil {
			return 0, dbError("reencrypt", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, dbError("reencrypt", err)
	}
	res.Reencrypted += int64(len(w.ID))
	res.Batches++
	return rows[len(rows)-1].ID, nil
}

// openRaw returns r's secrets in plain text, as stored: a template body
// stays a template.
func (s *PostgresSupervisor) openRaw(r *reencryptRow) (secrets, error) {
	v := secrets{body: r.Body, fingerprint: r.PayloadSHA256, credentials: r.AuthCredentials, headers: r.Headers}
	if r.SealedWith == nil {
		return v, nil
	}
	var err error
	open := func(column string, sealed []byte) []byte {
		if sealed == nil || err != nil {
			return nil
		}
		var plain []byte
		plain, err = s.enc.open(column, r.IdempotencyKey, r.URL, sealed)
		return plain
	}
	v.body = open(sealBody, r.Body)
	v.fingerprint = open(sealFingerprint, r.PayloadSHA256)
	v.credentials = open(sealCredentials, r.AuthCredentials)
	if h := open(sealHeaders, r.SealedHeaders); h != nil {
		v.headers = textOrNil(string(h))
	}
	return v, err
}
