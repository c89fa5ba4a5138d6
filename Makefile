# The two entry points named in README.md. Everything else is plain cargo.
CARGO ?= cargo

.PHONY: run test deps

# The main job: for now, which address would tortie-node pick on this machine, and why.
run:
	$(CARGO) run --quiet --release -p tortie-agent --bin tortie-node -- autodetect

# Every test: unit tests (no root) and the namespace integration tests (root), after
# installing the Debian packages they need. The binaries are built first because the
# integration tests run them as a user would.
test: deps
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace --no-fail-fast

deps:
	./scripts/install-test-deps.sh
