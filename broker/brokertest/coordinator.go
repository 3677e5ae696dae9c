package brokertest

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/updraft/updraft/broker"
	"github.com/updraft/updraft/internal/testenv"
)

// coordinatorCases are run by Run when the factory's brokers implement
// broker.Coordinator.
var coordinatorCases = []struct {
	name      string
	multiNode bool
	run       func(*testing.T, Factory)
}{
	{"LeaseExclusive", false, testLeaseExclusive},
	{"LeaseExpires", false, testLeaseExpires},
	{"PublishFenced", false, testPublishFenced},
	{"PublishFencedRefusesStaleLeader", false, testFencedStale},
	{"LeaseRace", true, testLeaseRace},
}

func coordinator(t testing.TB, n *node) broker.Coordinator {
	t.Helper()
	c, ok := n.Broker.(broker.Coordinator)
	if !ok {
		t.Fatalf("%T does not implement broker.Coordinator", n.Broker)
	}
	return c
}

// testLeaseExclusive: one holder at a time; renew, release, and a later
// holder's larger fence.
func testLeaseExclusive(t *testing.T, f Factory) {
	ctx := context.Background()
	c := coordinator(t, newNode(t, f, broker.Retention{}))
	name := newTopic(t)
	a, err := c.AcquireLease(ctx, name, time.Minute)
	if err != nil {
		t.Fatalf("AcquireLease: %v", err)
	}
	if a.Name != name || a.Fence() == 0 {
		t.Fatalf("lease %+v: want name %q and a fence", a, name)
	}
	if _, err := c.AcquireLease(ctx, name, time.Minute); !errors.Is(err, broker.ErrLeaseHeld) {
		t.Fatalf("second AcquireLease = %v, want ErrLeaseHeld", err)
	}
	if err := c.RenewLease(ctx, a, time.Minute); err != nil {
		t.Fatalf("RenewLease: %v", err)
	}
	if err := c.ReleaseLease(ctx, a); err != nil {
		t.Fatalf("ReleaseLease: %v", err)
	}
	if err := c.RenewLease(ctx, a, time.Minute); !errors.Is(err, broker.ErrLeaseLost) {
		t.Fatalf("RenewLease after release = %v, want ErrLeaseLost", err)
	}
	b, err := c.AcquireLease(ctx, name, time.Minute)
	if err != nil {
		t.Fatalf("AcquireLease after release: %v", err)
	}
	if b.Fence() <= a.Fence() || b.Token == a.Token {
		t.Errorf("later lease %q after %q: want a larger fence", b.Token, a.Token)
	}
	// Releasing a lease no longer held leaves the current holder alone.
	if err := c.ReleaseLease(ctx, a); err != nil {
		t.Fatalf("ReleaseLease of a stale lease: %v", err)
	}
	if err := c.RenewLease(ctx, b, time.Minute); err != nil {
		t.Errorf("the holder's lease was released by a stale holder: %v", err)
	}
}

// testLeaseExpires: an unrenewed lease expires and can be taken; its old
// holder can no longer renew it.
func testLeaseExpires(t *testing.T, f Factory) {
	ctx := context.Background()
	c := coordinator(t, newNode(t, f, broker.Retention{}))
	name := newTopic(t)
	a, err := c.AcquireLease(ctx, name, 100*time.Millisecond)
	if err != nil {
		t.Fatalf("AcquireLease: %v", err)
	}
	var b broker.Lease
	testenv.Eventually(t, waitFor, func() bool {
		b, err = c.AcquireLease(ctx, name, time.Minute)
		return err == nil
	}, "the lease did not expire: %v", err)
	if err := c.RenewLease(ctx, a, time.Minute); !errors.Is(err, broker.ErrLeaseLost) {
		t.Errorf("RenewLease of an expired lease = %v, want ErrLeaseLost", err)
	}
	if b.Fence() <= a.Fence() {
		t.Errorf("fence %d after %d", b.Fence(), a.Fence())
	}
}

// testPublishFenced: the holder's batch is published in order across
// topics, delivered like any publish, and its cursor stored.
func testPublishFenced(t *testing.T, f Factory) {
	ctx := context.Background()
	n := newNode(t, f, broker.Retention{})
	c := coordinator(t, n)
	name, t1, t2 := newTopic(t), newTopic(t), newTopic(t)
	subscribe(t, n, t1)
	subscribe(t, n, t2)
	publish(t, n, t1, `"before"`)
	if cur, err := c.Cursor(ctx, name); err != nil || cur != "" {
		t.Fatalf("Cursor before any batch = %q, %v; want empty", cur, err)
	}
	l, err := c.AcquireLease(ctx, name, time.Minute)
	if err != nil {
		t.Fatalf("AcquireLease: %v", err)
	}
	msgs := []broker.Item{
		{Topic: t1, Publication: broker.Publication{Event: "INSERT", Data: json.RawMessage(`{"id":1}`), TS: 10}},
		{Topic: t2, Publication: broker.Publication{Event: "UPDATE", Data: json.RawMessage(`{"id":2}`), Old: json.RawMessage(`{"id":2,"x":1}`)}},
		{Topic: t1, Publication: broker.Publication{Event: "DELETE", Data: json.RawMessage(`{"id":1}`), Truncated: true}},
	}
	pos, err := c.PublishFenced(ctx, l, msgs, "cursor-1")
	if err != nil {
		t.Fatalf("PublishFenced: %v", err)
	}
	if len(pos) != 3 || pos[0].Seq != 2 || pos[1].Seq != 1 || pos[2].Seq != 3 || pos[0].Epoch != pos[2].Epoch {
		t.Fatalf("positions %+v: want t1 seq 2 and 3 in one epoch, t2 seq 1", pos)
	}
	got1, got2 := n.rec.wait(t, t1, 3), n.rec.wait(t, t2, 1)
	if got1[1].Event != "INSERT" || got1[1].TS != 10 || got1[2].Event != "DELETE" || !got1[2].Truncated || got1[1].Truncated {
		t.Errorf("t1 delivered %+v", got1)
	}
	if got2[0].Event != "UPDATE" || string(got2[0].Old) != `{"id":2,"x":1}` || got2[0].TS == 0 {
		t.Errorf("t2 delivered %+v", got2)
	}
	page, err := n.History(ctx, t1, broker.HistoryQuery{})
	if err != nil || len(page.Messages) != 3 || !page.Messages[2].Truncated {
		t.Errorf("t1 history %+v, %v: want 3 messages, the last truncated", page, err)
	}
	if cur, err := c.Cursor(ctx, name); err != nil || cur != "cursor-1" {
		t.Errorf("Cursor = %q, %v; want cursor-1", cur, err)
	}
	// An empty batch stores the cursor alone.
	if pos, err := c.PublishFenced(ctx, l, nil, "cursor-2"); err != nil || len(pos) != 0 {
		t.Fatalf("empty PublishFenced = %v, %v", pos, err)
	}
	if cur, _ := c.Cursor(ctx, name); cur != "cursor-2" {
		t.Errorf("Cursor after an empty batch = %q, want cursor-2", cur)
	}
}

// testFencedStale: a deposed leader publishes nothing and moves no cursor.
func testFencedStale(t *testing.T, f Factory) {
	ctx := context.Background()
	n := newNode(t, f, broker.Retention{})
	c := coordinator(t, n)
	name, topic := newTopic(t), newTopic(t)
	old, err := c.AcquireLease(ctx, name, time.Minute)
	if err != nil {
		t.Fatalf("AcquireLease: %v", err)
	}
	if err := c.ReleaseLease(ctx, old); err != nil {
		t.Fatal(err)
	}
	cur, err := c.AcquireLease(ctx, name, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.PublishFenced(ctx, cur, nil, "good"); err != nil {
		t.Fatal(err)
	}
	msgs := []broker.Item{{Topic: topic, Publication: broker.Publication{Event: "INSERT", Data: json.RawMessage(`{}`)}}}
	if _, err := c.PublishFenced(ctx, old, msgs, "stale"); !errors.Is(err, broker.ErrLeaseLost) {
		t.Fatalf("stale PublishFenced = %v, want ErrLeaseLost", err)
	}
	if pos, err := n.Latest(ctx, topic); err != nil || pos.Seq != 0 {
		t.Errorf("a stale leader published: Latest = %+v, %v", pos, err)
	}
	if got, _ := c.Cursor(ctx, name); got != "good" {
		t.Errorf("a stale leader moved the cursor to %q", got)
	}
	// A lapsed lease nobody took is no longer the caller's either.
	if err := c.ReleaseLease(ctx, cur); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PublishFenced(ctx, cur, msgs, "after-release"); !errors.Is(err, broker.ErrLeaseLost) {
		t.Errorf("PublishFenced after release = %v, want ErrLeaseLost", err)
	}
}

// testLeaseRace: nodes racing for a free lease: exactly one wins.
func testLeaseRace(t *testing.T, f Factory) {
	ctx := context.Background()
	name := newTopic(t)
	const nodes = 4
	cs := make([]broker.Coordinator, nodes)
	for i := range cs {
		cs[i] = coordinator(t, newNode(t, f, broker.Retention{}))
	}
	for round := 0; round < 10; round++ {
		var wg sync.WaitGroup
		leases := make([]broker.Lease, nodes)
		errs := make([]error, nodes)
		for i, c := range cs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				leases[i], errs[i] = c.AcquireLease(ctx, name, time.Minute)
			}()
		}
		wg.Wait()
		var winner *broker.Lease
		for i, err := range errs {
			switch {
			case err == nil && winner != nil:
				t.Fatalf("round %d: two nodes hold the lease", round)
			case err == nil:
				winner = &leases[i]
			case !errors.Is(err, broker.ErrLeaseHeld):
				t.Fatalf("round %d: AcquireLease: %v", round, err)
			}
		}
		if winner == nil {
			t.Fatalf("round %d: nobody won the lease", round)
		}
		if err := cs[0].ReleaseLease(ctx, *winner); err != nil {
			t.Fatal(err)
		}
	}
}
