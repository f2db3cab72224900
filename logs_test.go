package webhook_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Every log line the library writes has a message the README's table
// lists and snake_case attributes, so that users can build alerts on them.
func TestLogMessagesAreDocumented(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	call := regexp.MustCompile(`LogAttrs\([^,]+,\s*slog\.Level\w+,\s*"((?:[^"\\]|\\.)*)"(\s*\+)?`)
	key := regexp.MustCompile(`slog\.\w+\("([^"]+)"`)
	var files []string
	for _, pattern := range []string{"*.go", "internal/*/*.go", "webhookui/*.go", "cmd/*/*.go"} {
		m, err := filepath.Glob(pattern)
		require.NoError(t, err)
		files = append(files, m...)
	}
	found := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		require.NoError(t, err)
		s := string(src)
		for _, loc := range call.FindAllStringSubmatchIndex(s, -1) {
			found++
			msg := s[loc[2]:loc[3]]
			if loc[4] >= 0 { // a message completed at run time: its fixed part
				msg = strings.TrimSpace(msg)
			}
			msg = strings.ReplaceAll(msg, `\"`, `"`)
			require.True(t, strings.Contains(string(readme), "`"+msg), "%s: log message %q is not in the README's table", f, msg)
			end := strings.Index(s[loc[1]:], "\n\t}") // the call's attributes, up to a generous bound
			if end < 0 || end > 600 {
				end = 600
			}
			rest := s[loc[1]:min(len(s), loc[1]+end)]
			if i := strings.Index(rest, "))\n"); i >= 0 {
				rest = rest[:i+1]
			}
			for _, k := range key.FindAllStringSubmatch(rest, -1) {
				require.Regexp(t, `^[a-z][a-z0-9_]*$`, k[1], "%s: attribute of %q", f, msg)
			}
		}
	}
	require.Greater(t, found, 20, "the scan found the log calls")
}
