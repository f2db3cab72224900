package receive

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// sellerPackage is the root package: the delivery engine and its Postgres
// driver, which a buyer's binary must not link.
const sellerPackage = "github.com/adcpkit/webhook"

// forbiddenDeps returns the packages in deps that a buyer's binary must not
// link: the root package and anything of pgx.
func forbiddenDeps(deps []string) []string {
	var bad []string
	for _, d := range deps {
		if d == sellerPackage || strings.Contains(d, "jackc/pgx") {
			bad = append(bad, d)
		}
	}
	return bad
}

func TestForbiddenDeps(t *testing.T) {
	t.Parallel()
	require.Empty(t, forbiddenDeps([]string{"net/http", "github.com/adcpkit/webhook/internal/sfv", "github.com/adcpkit/webhook/receive"}))
	require.Equal(t, []string{sellerPackage, "github.com/jackc/pgx/v5/pgconn"},
		forbiddenDeps([]string{"fmt", sellerPackage, "github.com/jackc/pgx/v5/pgconn", "github.com/jackc/puddle/v2"}))
}

// TestNoSellerDependencies lists what this package links, as the go command
// sees it, and fails if that includes the root package or pgx.
func TestNoSellerDependencies(t *testing.T) {
	t.Parallel()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("the go command is not on PATH, so this package's dependencies cannot be listed")
	}
	out, err := exec.Command(goBin, "list", "-deps", sellerPackage+"/receive").CombinedOutput()
	require.NoError(t, err, "go list -deps: %s", out)
	deps := strings.Fields(string(out))
	require.Contains(t, deps, sellerPackage+"/receive", "go list listed the package itself")
	require.Empty(t, forbiddenDeps(deps), "package receive must not import the root package or pgx, directly or not")
}
