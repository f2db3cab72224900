package webhook

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestPositionalNumbersNamesInOrderOfFirstUse(t *testing.T) {
	t.Parallel()
	sql, names := positional(`SELECT @b::int, '@not' AS "@nor", @a -- @neither
, @b, x @> y, @a_1`)
	require.Equal(t, `SELECT $1::int, '@not' AS "@nor", $2 -- @neither
, $1, x @> y, $3`, sql)
	require.Equal(t, []string{"b", "a", "a_1"}, names)
}

type testParams struct {
	A             int       `db:"a"`
	B             string    `db:"b"`
	When          time.Time `db:"when"`
	notAParameter int
}

type testEmbedding struct {
	testParams
	C *string `db:"c"`
}

func TestCompileBindsEveryParameterByName(t *testing.T) {
	t.Parallel()
	s := compile[testEmbedding](`SELECT @c, @b, @a, @when, @b`)
	require.Equal(t, `SELECT $1, $2, $3, $4, $2`, s.sql)
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := "c"
	require.Equal(t, []any{&c, "bee", 7, at}, s.args(&testEmbedding{testParams{A: 7, B: "bee", When: at}, &c}))
	require.Equal(t, []string{"c", "b", "a", "when"}, ParamNames(s.sql))
}

func TestCompileRefusesAMismatch(t *testing.T) {
	t.Parallel()
	require.PanicsWithValue(t, "webhook: statement parameter @d has no field in webhook.testParams", func() {
		compile[testParams](`SELECT @a, @b, @when, @d`)
	})
	require.PanicsWithValue(t, `webhook: field "when" of webhook.testParams is not a parameter of its statement`, func() {
		compile[testParams](`SELECT @a, @b`)
	})
}

func TestColumnsAndParamsFollowTheRowStruct(t *testing.T) {
	t.Parallel()
	require.Equal(t, "x.a, x.b, x.when", columns[testParams]("x."))
	require.Equal(t, "@a, @when", params[testParams]("b"))
	require.Contains(t, columns[jobRow]("d."), "d.accepted_at, d.first_attempt_at")
	require.Equal(t, "unnest(@gate_breaker_key::text[], @gate_state::text[], @gate_failures::int[], @gate_successes::int[], "+
		"@gate_opened_at::timestamptz[], @gate_period::bigint[], @gate_retry_at::timestamptz[], @gate_failing_since::timestamptz[], "+
		"@gate_failed_deliveries::int[], @gate_failing::boolean[], @gate_expected::bigint[], @gate_updated_at::timestamptz[]) "+
		"AS g(breaker_key, state, failures, successes, opened_at, period, retry_at, failing_since, failed_deliveries, failing, expected, updated_at)",
		unnest[batchGates]("g", "gate_"))
}

// Every statement compiles against its parameter struct (compile panics
// otherwise), and every array column of the batch has its element type.
func TestEveryStatementCompiles(t *testing.T) {
	t.Parallel()
	q := newPgSQL(PostgresTables{}.withDefaults())
	require.NotEmpty(t, q.completeBatch.sql)
	require.NotContains(t, q.completeBatch.sql, "::[]", "a batch column without a pg tag")
	require.NotContains(t, q.completeBatch.sql, "@")
}

func TestPositionalLeavesWhatIsNotSQLAlone(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ in, out string }{
		{`SELECT E'\'@x' || @a`, `SELECT E'\'@x' || $1`},
		{`SELECT 'it''s @x' || @a`, `SELECT 'it''s @x' || $1`},
		{`/* it's /* @x */ still */ SELECT @a`, `/* it's /* @x */ still */ SELECT $1`},
		{`SELECT $$it's @x$$ || $q$ @x $q$ || @a`, `SELECT $$it's @x$$ || $q$ @x $q$ || $1`},
		{`SELECT "@x" -- @x` + "\n" + `, @a`, `SELECT "@x" -- @x` + "\n" + `, $1`},
		{`SELECT x$1, @a`, `SELECT x$1, $1`},
	} {
		sql, names := positional(c.in)
		require.Equal(t, c.out, sql, c.in)
		require.Equal(t, []string{"a"}, names, c.in)
	}
}
