# Everything here is plain go commands; see README.md.
.PHONY: test lint dev bench compose-secrets compose-check build

test:            ## gofmt check, go vet, tests with -race (real Redis when it answers), short fuzz
	@scripts/test.sh

lint:            ## staticcheck (fetched at a pinned version by go run; not part of make test)
	go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

dev:             ## run everything embedded: NATS, a Redis store, a worker, demo jobs
	go run ./cmd/connector dev

bench:           ## job runtime vs raw JetStream (see docs/benchmarks.md)
	go run ./cmd/connector bench -n 100000 -rounds 3

build:           ## every command into bin/: connector, shop, catalog, shop-schedule (as the Dockerfile)
	CGO_ENABLED=0 go build -o bin/ ./cmd/connector ./cmd/... ./examples/...

compose-secrets: ## generate the secrets docker-compose.yml mounts
	deploy/compose/gen-secrets.sh

compose-check:   ## validate docker-compose.yml (installs Debian's docker-compose if missing)
	deploy/compose-check.sh
