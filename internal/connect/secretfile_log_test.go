package connect_test

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/connect"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// TestRedisPasswordFileLostIsLogged: when the mounted password file
// cannot be read on a new connection, the client keeps the last password
// and says so in the log it was given (before, the warning went nowhere).
func TestRedisPasswordFileLostIsLogged(t *testing.T) {
	const pw = "Redis-File-Lost-1"
	p, out := startRedis(t, false, "--requirepass", pw)
	if p == nil {
		t.Fatalf("redis-server exited:\n%s", out)
	}
	addr := "127.0.0.1:" + strconv.Itoa(p.Port)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pwFile := writeFile(t, "pw", pw+"\n")
	core, logs := observer.New(zap.WarnLevel)
	c, err := connect.ConnectRedis(ctx, connect.RedisConfig{URL: "redis://" + addr, PasswordFile: pwFile}, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := os.Remove(pwFile); err != nil {
		t.Fatal(err)
	}
	adm := redis.NewClient(&redis.Options{Addr: addr, Password: pw})
	defer adm.Close()
	if err := adm.Do(ctx, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes").Err(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return c.Ping(ctx).Err() == nil }, "ping with the last password read")
	if n := logs.FilterMessageSnippet("cannot re-read a secret file").Len(); n == 0 {
		t.Fatalf("no warning about the unreadable password file; logs: %v", logs.All())
	}
}
