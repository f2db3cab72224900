package webhook

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Statements by name. Every statement is written with named parameters
// (@name) and compiled once, when a supervisor is made, into the positional
// form Postgres takes ($1, $2, …) and a binding to a parameter struct whose
// `db` tags name the parameters. A name with no field, or a field no
// statement uses, is a programming error that fails at compilation, so
// every test that makes a supervisor checks every binding; and nothing
// else knows a parameter's position. (pgx's NamedArgs rewrite the SQL on
// every call: about 20µs and a hundred allocations for the batch
// statement.) Result rows are scanned by column name into structs with
// the same tags (pgx.RowToStructByName), so adding a column touches the
// statement and one struct.

// stmt is a compiled statement whose parameters come from a P.
type stmt[P any] struct {
	sql   string  // positional
	paths [][]int // the field of P that binds $k, for k = 1…
}

// paramNames maps each compiled statement's positional SQL to its
// parameters' names, for tests that script a database.
var paramNames sync.Map

// compile compiles named SQL whose parameters a P binds. It panics when a
// parameter has no field in P or a tagged field of P is not used.
func compile[P any](named string) stmt[P] {
	sql, names := positional(named)
	fields := taggedFields(reflect.TypeFor[P]())
	s := stmt[P]{sql: sql}
	used := make(map[string]bool, len(names))
	for _, n := range names {
		path, ok := fields[n]
		if !ok {
			panic(fmt.Sprintf("webhook: statement parameter @%s has no field in %v", n, reflect.TypeFor[P]()))
		}
		s.paths = append(s.paths, path)
		used[n] = true
	}
	for n := range fields {
		if !used[n] {
			panic(fmt.Sprintf("webhook: field %q of %v is not a parameter of its statement", n, reflect.TypeFor[P]()))
		}
	}
	paramNames.Store(sql, names)
	return s
}

// args are p's values in parameter order.
func (s stmt[P]) args(p *P) []any {
	v := reflect.ValueOf(p).Elem()
	out := make([]any, len(s.paths))
	for i, path := range s.paths {
		out[i] = v.FieldByIndex(path).Interface()
	}
	return out
}

// taggedFields maps each `db` tag of struct t (and of its embedded
// structs) to its field's index path.
func taggedFields(t reflect.Type) map[string][]int {
	out := map[string][]int{}
	for _, f := range reflect.VisibleFields(t) {
		if name, ok := f.Tag.Lookup("db"); ok && name != "-" {
			if _, dup := out[name]; dup {
				panic(fmt.Sprintf("webhook: %v has two fields tagged %q", t, name))
			}
			out[name] = f.Index
		}
	}
	return out
}

// positional turns @name parameters into $n, the same name into the same
// $n, and returns the names in order. It leaves alone what Postgres does
// not read as SQL: quoted strings (E-strings with backslash escapes too),
// quoted identifiers, dollar-quoted strings, and comments.
func positional(sql string) (string, []string) {
	var b strings.Builder
	var names []string
	index := map[string]int{}
	for i := 0; i < len(sql); {
		j := skipQuoted(sql, i)
		if j > i {
			b.WriteString(sql[i:j])
			i = j
			continue
		}
		if sql[i] == '@' && i+1 < len(sql) && isNameStart(sql[i+1]) {
			j := i + 1
			for j < len(sql) && isNamePart(sql[j]) {
				j++
			}
			name := sql[i+1 : j]
			n, ok := index[name]
			if !ok {
				names = append(names, name)
				n = len(names)
				index[name] = n
			}
			b.WriteString("$" + strconv.Itoa(n))
			i = j
			continue
		}
		b.WriteByte(sql[i])
		i++
	}
	return b.String(), names
}

// skipQuoted returns where the quoted string, quoted identifier,
// dollar-quoted string or comment that starts at i ends, or i when none
// starts there. An unterminated one runs to the end.
func skipQuoted(sql string, i int) int {
	rest := sql[i:]
	switch {
	case rest[0] == '\'' || rest[0] == '"':
		escapes := rest[0] == '\'' && i > 0 && (sql[i-1] == 'E' || sql[i-1] == 'e') && (i == 1 || !isNamePart(sql[i-2]))
		for j := 1; j < len(rest); j++ {
			switch {
			case escapes && rest[j] == '\\':
				j++
			case rest[j] == rest[0]:
				return i + j + 1 // a doubled quote starts the next string
			}
		}
	case strings.HasPrefix(rest, "--"):
		if j := strings.IndexByte(rest, '\n'); j >= 0 {
			return i + j
		}
	case strings.HasPrefix(rest, "/*"):
		depth := 0 // Postgres nests block comments
		for j := 0; j+1 < len(rest); j++ {
			switch rest[j : j+2] {
			case "/*":
				depth++
				j++
			case "*/":
				if depth--; depth == 0 {
					return i + j + 2
				}
				j++
			}
		}
	case rest[0] == '$' && (i == 0 || !isNamePart(sql[i-1])):
		j := 1
		for j < len(rest) && isNamePart(rest[j]) && !(j == 1 && '0' <= rest[j] && rest[j] <= '9') {
			j++
		}
		if j == len(rest) || rest[j] != '$' {
			return i // $1, not a dollar quote
		}
		tag := rest[:j+1]
		if k := strings.Index(rest[j+1:], tag); k >= 0 {
			return i + j + 1 + k + len(tag)
		}
	default:
		return i
	}
	return len(sql)
}

func isNameStart(c byte) bool { return c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }
func isNamePart(c byte) bool  { return isNameStart(c) || '0' <= c && c <= '9' }

// columns lists the `db` tags of row struct T, in field order: the columns
// a statement selects or inserts for it. With a prefix each is prefix.name
// (a table alias: "d." say).
func columns[T any](prefix string) string {
	var out []string
	for _, f := range reflect.VisibleFields(reflect.TypeFor[T]()) {
		name, ok := f.Tag.Lookup("db")
		if !ok || name == "-" {
			continue
		}
		out = append(out, prefix+name)
	}
	return strings.Join(out, ", ")
}

// params lists @name for each `db` tag of T, in field order, skipping the
// names in except: the values clause that matches columns[T].
func params[T any](except ...string) string {
	var out []string
	for _, f := range reflect.VisibleFields(reflect.TypeFor[T]()) {
		name, ok := f.Tag.Lookup("db")
		if !ok || name == "-" || slices.Contains(except, name) {
			continue
		}
		out = append(out, "@"+name)
	}
	return strings.Join(out, ", ")
}

// unnest is a FROM item that turns the array parameters of T (one field
// per column, its pg tag the element type) into rows of alias, whose
// columns are the tags without trim.
func unnest[T any](alias, trim string) string {
	var arrays, cols []string
	for _, f := range reflect.VisibleFields(reflect.TypeFor[T]()) {
		name, ok := f.Tag.Lookup("db")
		if !ok || name == "-" {
			continue
		}
		arrays = append(arrays, "@"+name+"::"+f.Tag.Get("pg")+"[]")
		cols = append(cols, strings.TrimPrefix(name, trim))
	}
	return "unnest(" + strings.Join(arrays, ", ") + ") AS " + alias + "(" + strings.Join(cols, ", ") + ")"
}

// exec runs s with p on q.
func exec[P any](ctx context.Context, q querier, s stmt[P], p P) (pgconn.CommandTag, error) {
	return q.Exec(ctx, s.sql, s.args(&p)...)
}

// query runs s with p on q.
func query[P any](ctx context.Context, q querier, s stmt[P], p P) (pgx.Rows, error) {
	return q.Query(ctx, s.sql, s.args(&p)...)
}

// queryRow runs s with p on q, for one row.
func queryRow[P any](ctx context.Context, q querier, s stmt[P], p P) pgx.Row {
	return q.QueryRow(ctx, s.sql, s.args(&p)...)
}

// collect scans every row by column name into a T. On an error it
// returns the rows scanned before it: a claim's rows are claimed already.
func collect[T any](rows pgx.Rows, err error) ([]T, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := pgx.RowToStructByName[T](rows)
		if err != nil {
			return out, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// collectOne scans the one row by column name into a T.
func collectOne[T any](rows pgx.Rows, err error) (T, error) {
	if err != nil {
		var zero T
		return zero, err
	}
	return pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[T])
}
