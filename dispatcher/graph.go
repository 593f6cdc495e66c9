package dispatcher

import (
	"context"
	"fmt"

	"github.com/connector-go/connector/internal/graphs"
	"github.com/connector-go/connector/internal/records"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
	"github.com/nats-io/nats.go"
)

// Node is a part of a job graph: a job, a chain or a group. Graphs nest:
//
//	g := dispatcher.Chain(
//		dispatcher.Job(ImportCustomer{ID: "7"}),
//		dispatcher.Group(dispatcher.Job(ImportProduct{ID: "1"}), dispatcher.Job(ImportProduct{ID: "2"})),
//		dispatcher.Job(ImportOrder{ID: "42"}), // runs when both products are done
//	)
//	res, err := d.EnqueueGraph(ctx, g)
//
// A job of a graph waits (state "pending") until all its parents are done.
// A parent that ends dead keeps its children waiting until it is requeued and
// succeeds, or is cancelled: then its descendants are cancelled too.
type Node interface{ heads() []*jobNode }

type jobNode struct {
	args job.Args
	opts []job.Option
	id   string
	kids []*jobNode
	pars []*jobNode
}

type chainNode struct{ parts []Node }
type groupNode struct{ parts []Node }

// Job is one job of a graph.
func Job(args job.Args, opts ...job.Option) Node { return &jobNode{args: args, opts: opts} }

// Chain runs its parts one after the other: each starts when everything of
// the previous part is done (the seed's on_done edges). An empty part (a
// group or chain without a job, at any depth) is no step: the part after
// it waits for the last part before it that has a job.
func Chain(parts ...Node) Node { return &chainNode{parts: parts} }

// Group runs its parts concurrently.
func Group(parts ...Node) Node { return &groupNode{parts: parts} }

func (j *jobNode) heads() []*jobNode { return []*jobNode{j} }
func (c *chainNode) heads() []*jobNode {
	for _, p := range c.parts {
		if h := p.heads(); len(h) > 0 {
			return h
		}
	}
	return nil
}
func (g *groupNode) heads() []*jobNode {
	var out []*jobNode
	for _, p := range g.parts {
		out = append(out, p.heads()...)
	}
	return out
}

func tails(n Node) []*jobNode {
	switch v := n.(type) {
	case *jobNode:
		return []*jobNode{v}
	case *chainNode:
		for i := len(v.parts) - 1; i >= 0; i-- {
			if t := tails(v.parts[i]); len(t) > 0 {
				return t
			}
		}
		return nil
	case *groupNode:
		var out []*jobNode
		for _, p := range v.parts {
			out = append(out, tails(p)...)
		}
		return out
	}
	return nil
}

// link wires the edges of n and collects its jobs in declaration order.
func link(n Node, all *[]*jobNode) {
	switch v := n.(type) {
	case *jobNode:
		*all = append(*all, v)
	case *chainNode:
		var prev []*jobNode // the tails of the last part with a job
		for _, p := range v.parts {
			link(p, all)
			heads := p.heads()
			if len(heads) == 0 {
				continue // empty
			}
			for _, parent := range prev {
				for _, child := range heads {
					parent.kids = append(parent.kids, child)
					child.pars = append(child.pars, parent)
				}
			}
			prev = tails(p)
		}
	case *groupNode:
		for _, p := range v.parts {
			link(p, all)
		}
	}
}

// GraphResult names an enqueued graph and its jobs, in declaration order.
type GraphResult struct {
	ID   string
	Jobs []string
}

// EnqueueGraph enqueues a job graph: jobs without parents at once, the
// others when their parents are done. Needs Redis (WithRedis). Identity
// keys are ignored inside graphs.
func (d *Dispatcher) EnqueueGraph(ctx context.Context, g Node) (GraphResult, error) {
	if d.rdb == nil {
		return GraphResult{}, fmt.Errorf("dispatcher: job graphs: %w", ErrNoRedis)
	}
	var all []*jobNode
	link(g, &all)
	seen := map[*jobNode]bool{}
	for _, j := range all {
		if seen[j] {
			return GraphResult{}, fmt.Errorf("dispatcher: a job node appears twice in the graph")
		}
		seen[j] = true
	}
	res := GraphResult{ID: "g" + wire.NewID()}
	preps := make([]*prepared, len(all))
	for i, j := range all {
		o := job.Apply(j.args, j.opts...)
		o.IdentityKey, o.IdentityFunc = "", nil
		raw, err := wire.Marshal(j.args)
		if err != nil {
			return GraphResult{}, fmt.Errorf("dispatcher: encode %s args: %w", j.args.JobName(), err)
		}
		p, err := d.prepareRaw(ctx, j.args.JobName(), raw, o)
		if err != nil {
			return GraphResult{}, err
		}
		p.env.Graph = res.ID
		// A child is published by whichever worker finishes its last
		// parent, possibly twice after a crash: dedup by job id.
		if p.msg.Header == nil {
			p.msg.Header = nats.Header{}
		}
		p.msg.Header[wire.HeaderMsgID] = []string{p.env.ID}
		if p.msg.Data, err = wire.EncodeEnvelope(p.env); err != nil {
			return GraphResult{}, err
		}
		j.id = p.env.ID
		preps[i] = p
		res.Jobs = append(res.Jobs, p.env.ID)
	}
	nodes := make([]graphs.Node, len(all))
	for i, j := range all {
		nd := graphs.Node{ID: j.id, ETA: preps[i].eta}
		for _, k := range j.kids {
			nd.Children = append(nd.Children, k.id)
		}
		for _, p := range j.pars {
			nd.Parents = append(nd.Parents, p.id)
		}
		if len(j.pars) > 0 {
			m := preps[i].msg
			nd.Pending = &graphs.Pending{Subject: m.Subject, Header: m.Header, Data: m.Data}
		}
		nodes[i] = nd
	}
	if err := graphs.Store(ctx, d.rdb, d.names, res.ID, nodes); err != nil {
		return GraphResult{}, err
	}
	// The waiting jobs' records are written before any root can run: a
	// root done at once has its worker record the children it releases
	// (enqueued, with their sequence), which a "pending" landing after
	// would take back.
	held := false
	for i, j := range all {
		if p := preps[i]; len(j.pars) > 0 {
			d.rec.Record(&records.Update{ID: p.env.ID, Queued: job.StatePending, Name: p.env.Name,
				Channel: p.env.Channel, EnqueuedAt: wire.FromMillis(p.env.EnqueuedAt), Graph: res.ID})
			d.endSpan(p, nil)
			held = true
		}
	}
	if held {
		if err := d.rec.Flush(ctx); err != nil {
			return res, fmt.Errorf("dispatcher: graph %s: %w", res.ID, err)
		}
	}
	for i, j := range all {
		p := preps[i]
		if len(j.pars) > 0 {
			continue
		}
		ack, err := d.js.PublishMsg(p.ctx, p.msg)
		d.endSpan(p, err)
		if err != nil {
			return res, fmt.Errorf("dispatcher: graph %s: publish %s: %w", res.ID, p.env.Name, err)
		}
		d.recordEnqueued(p, ack.Sequence)
	}
	return res, nil
}
