package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/a2aproject/a2a-go/a2a"
	"github.com/a2aproject/a2a-go/a2asrv"
	"github.com/a2aproject/a2a-go/a2asrv/push"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// schema holds the two stores' tables. A task is kept as its JSON; a push
// config as its JSON, keyed by task and config ID.
const schema = `
CREATE TABLE IF NOT EXISTS a2a_tasks (
    id         text PRIMARY KEY,
    context_id text NOT NULL,
    task       jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS a2a_push_configs (
    task_id    text NOT NULL,
    id         text NOT NULL,
    config     jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, id)
);`

// CreateSchema creates the stores' tables if they do not exist.
func CreateSchema(ctx context.Context, pool *pgxpool.Pool) error {
	_, err := pool.Exec(ctx, schema, pgx.QueryExecModeSimpleProtocol)
	return err
}

// TaskStore is an a2asrv.TaskStore in Postgres.
type TaskStore struct{ pool *pgxpool.Pool }

var _ a2asrv.TaskStore = (*TaskStore)(nil)

// NewTaskStore returns a TaskStore on pool.
func NewTaskStore(pool *pgxpool.Pool) *TaskStore { return &TaskStore{pool: pool} }

// Save stores task, replacing any earlier version of it.
func (s *TaskStore) Save(ctx context.Context, task *a2a.Task) error {
	if task == nil || task.ID == "" {
		return fmt.Errorf("%w: a task needs an ID", a2a.ErrInvalidParams)
	}
	doc, err := json.Marshal(task)
	if err != nil {
		return err
	}
	_, err = s.pool.Exec(ctx, `INSERT INTO a2a_tasks (id, context_id, task) VALUES ($1, $2, $3)
		ON CONFLICT (id) DO UPDATE SET context_id = EXCLUDED.context_id, task = EXCLUDED.task, updated_at = now()`,
		string(task.ID), task.ContextID, doc)
	return err
}

// Get returns the task, or a2a.ErrTaskNotFound.
func (s *TaskStore) Get(ctx context.Context, id a2a.TaskID) (*a2a.Task, error) {
	var doc []byte
	err := s.pool.QueryRow(ctx, `SELECT task FROM a2a_tasks WHERE id = $1`, string(id)).Scan(&doc)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, a2a.ErrTaskNotFound
	}
	if err != nil {
		return nil, err
	}
	var t a2a.Task
	if err := json.Unmarshal(doc, &t); err != nil {
		return nil, err
	}
	return &t, nil
}

// PushConfigStore is an a2asrv.PushConfigStore in Postgres.
type PushConfigStore struct{ pool *pgxpool.Pool }

var _ a2asrv.PushConfigStore = (*PushConfigStore)(nil)

// NewPushConfigStore returns a PushConfigStore on pool.
func NewPushConfigStore(pool *pgxpool.Pool) *PushConfigStore { return &PushConfigStore{pool: pool} }

// Save creates or replaces a config of the task; a config without an ID
// gets a store-generated one. It returns what was stored.
func (s *PushConfigStore) Save(ctx context.Context, taskID a2a.TaskID, config *a2a.PushConfig) (*a2a.PushConfig, error) {
	if config == nil || config.URL == "" {
		return nil, fmt.Errorf("%w: a push config needs a URL", a2a.ErrInvalidParams)
	}
	c := *config
	if c.ID == "" {
		var b [16]byte
		_, _ = rand.Read(b[:])
		c.ID = hex.EncodeToString(b[:])
	}
	doc, err := json.Marshal(&c)
	if err != nil {
		return nil, err
	}
	_, err = s.pool.Exec(ctx, `INSERT INTO a2a_push_configs (task_id, id, config) VALUES ($1, $2, $3)
		ON CONFLICT (task_id, id) DO UPDATE SET config = EXCLUDED.config`, string(taskID), c.ID, doc)
	if err != nil {
		return nil, err
	}
	return decodeConfig(doc)
}

// Get returns one config of the task, or push.ErrPushConfigNotFound.
func (s *PushConfigStore) Get(ctx context.Context, taskID a2a.TaskID, configID string) (*a2a.PushConfig, error) {
	var doc []byte
	err := s.pool.QueryRow(ctx, `SELECT config FROM a2a_push_configs WHERE task_id = $1 AND id = $2`, string(taskID), configID).Scan(&doc)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, push.ErrPushConfigNotFound
	}
	if err != nil {
		return nil, err
	}
	return decodeConfig(doc)
}

// List returns the task's configs, oldest first; none is an empty slice.
func (s *PushConfigStore) List(ctx context.Context, taskID a2a.TaskID) ([]*a2a.PushConfig, error) {
	rows, err := s.pool.Query(ctx, `SELECT config FROM a2a_push_configs WHERE task_id = $1 ORDER BY created_at, id`, string(taskID))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []*a2a.PushConfig{}
	for rows.Next() {
		var doc []byte
		if err := rows.Scan(&doc); err != nil {
			return nil, err
		}
		c, err := decodeConfig(doc)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// Delete removes one config; deleting one that does not exist is not an
// error.
func (s *PushConfigStore) Delete(ctx context.Context, taskID a2a.TaskID, configID string) error {
	_, err := s.pool.Exec(ctx, `DELETE FROM a2a_push_configs WHERE task_id = $1 AND id = $2`, string(taskID), configID)
	return err
}

// DeleteAll removes every config of the task.
func (s *PushConfigStore) DeleteAll(ctx context.Context, taskID a2a.TaskID) error {
	_, err := s.pool.Exec(ctx, `DELETE FROM a2a_push_configs WHERE task_id = $1`, string(taskID))
	return err
}

func decodeConfig(doc []byte) (*a2a.PushConfig, error) {
	var c a2a.PushConfig
	if err := json.Unmarshal(doc, &c); err != nil {
		return nil, err
	}
	return &c, nil
}
