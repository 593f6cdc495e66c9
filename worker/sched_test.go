package worker

import (
	"sync"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/channels"
)

// idleRunners registers n runners as waiting in next, as next does, without
// goroutines: the test then sees which of them a push signals.
func idleRunners(s *scheduler, n int) []chan struct{} {
	cs := make([]chan struct{}, n)
	for i := range cs {
		cs[i] = make(chan struct{}, 1)
		s.idle = append(s.idle, cs[i])
	}
	return cs
}

func signalled(cs []chan struct{}) []int {
	var out []int
	for i, c := range cs {
		if len(c) > 0 {
			out = append(out, i)
		}
	}
	return out
}

func items(n int) []*item {
	its := make([]*item, n)
	for i := range its {
		its[i] = &item{band: channels.BandNormal}
	}
	return its
}

// A push signals one idle runner, the one idle for the shortest time, and
// no other until that one runs: short jobs do not wake a crowd of runners.
func TestSchedulerWakesOneRunnerAtATime(t *testing.T) {
	s := newScheduler()
	cs := idleRunners(s, 5)
	s.pushAll(items(10))
	if got := signalled(cs); len(got) != 1 || got[0] != 4 {
		t.Fatalf("signalled runners %v, want only the last idle one [4]", got)
	}
	s.pushAll(items(10))
	if !s.pushReady(&item{}) {
		t.Fatal("pushReady refused on an open scheduler")
	}
	if got := signalled(cs); len(got) != 1 {
		t.Fatalf("signalled runners %v after more pushes, want still one", got)
	}
	// The signalled runner runs (as next does after its wait: it takes
	// its signal and clears the wake-up in flight), takes a job and, more
	// waiting, passes the wake-up on to the next most recent idle runner.
	<-cs[4]
	s.mu.Lock()
	s.waking = false
	s.mu.Unlock()
	if it := s.next(cs[4]); it == nil {
		t.Fatal("signalled runner got no job")
	}
	if got := signalled(cs); len(got) != 1 || got[0] != 3 {
		t.Fatalf("signalled runners %v after the first ran, want [3]", got)
	}
}

// Closing wakes every idle runner, and next returns nil to each.
func TestSchedulerCloseWakesIdleRunners(t *testing.T) {
	s := newScheduler()
	const n = 8
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if it := s.next(make(chan struct{}, 1)); it != nil {
				t.Errorf("next returned a job on an empty, closed scheduler")
			}
		}()
	}
	waitIdle(t, s, n)
	if left := s.closeAndDrain(); len(left) != 0 {
		t.Fatalf("drained %d jobs from an empty scheduler", len(left))
	}
	wg.Wait()
}

// Slow jobs get a runner each: the one-at-a-time wake-up chain brings every
// runner up while jobs keep waiting (no wake-up is lost).
func TestSchedulerRampsUpForSlowJobs(t *testing.T) {
	s := newScheduler()
	const n = 16
	release := make(chan struct{})
	var running sync.WaitGroup
	running.Add(n)
	var done sync.WaitGroup
	for range n {
		done.Add(1)
		go func() {
			defer done.Done()
			wake := make(chan struct{}, 1)
			for s.next(wake) != nil {
				running.Done()
				<-release // a slow job
			}
		}()
	}
	waitIdle(t, s, n)
	s.pushAll(items(n))
	all := make(chan struct{})
	go func() { running.Wait(); close(all) }()
	select {
	case <-all:
	case <-time.After(10 * time.Second):
		t.Fatal("not every runner took one of the slow jobs")
	}
	s.closeAndDrain()
	close(release)
	done.Wait()
}

func waitIdle(t *testing.T, s *scheduler, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.mu.Lock()
		idle := len(s.idle)
		s.mu.Unlock()
		if idle == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d runners idle, want %d", idle, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// The inflight set holds each job once, in any order of removal; removing
// a job twice, or one never added, changes nothing.
func TestInflightSet(t *testing.T) {
	var s inflightSet
	its := items(5)
	for _, it := range its {
		s.add(it)
	}
	s.add(its[2])  // already held
	s.del(its[0])  // the oldest (tail)
	s.del(its[4])  // the newest (head)
	s.del(its[2])  // one in the middle
	s.del(its[2])  // again
	s.del(&item{}) // never added
	got := map[*item]bool{}
	for _, it := range s.snapshot() {
		if got[it] {
			t.Fatal("a job listed twice")
		}
		got[it] = true
	}
	if len(got) != 2 || !got[its[1]] || !got[its[3]] {
		t.Fatalf("snapshot holds %d jobs, want jobs 1 and 3", len(got))
	}
	s.del(its[1])
	s.del(its[3])
	if n := len(s.snapshot()); n != 0 || s.head != nil || s.n != 0 {
		t.Fatalf("empty set lists %d jobs (head %v, n %d)", n, s.head, s.n)
	}
	s.add(its[0]) // a job removed may come back (a hand-back's redelivery is a new item, but the set allows it)
	if n := len(s.snapshot()); n != 1 {
		t.Fatalf("set lists %d jobs, want 1", n)
	}
}
