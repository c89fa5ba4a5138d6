# The two entry points named in README.md. Everything else is plain cargo.
CARGO ?= cargo

.PHONY: run test deps

# The main job: a 3-node demo cluster of network namespaces on this machine (as root), with
# pods on every node and a report of sessions, routes and pod-to-pod reachability. The
# binaries are built first: tortiectl starts tortie-node and the tortie plugin from beside
# itself. `target/release/tortiectl demo status` and `demo down` inspect and remove it.
run:
	$(CARGO) build --quiet --release --workspace --bins
	target/release/tortiectl demo up

# Every test: unit tests (no root) and the namespace integration tests (root), after
# installing the Debian packages they need. The binaries are built first because the
# integration tests run them as a user would.
test: deps
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace --no-fail-fast

deps:
	./scripts/install-test-deps.sh
