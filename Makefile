# The two entry points named in README.md. Everything else is plain cargo.
CARGO ?= cargo

.PHONY: run test deps

# The main job: a 3-node demo cluster of network namespaces on this machine (as root), with
# pods on every node and a report of sessions, routes and pod-to-pod reachability. The
# binaries are built first: tortiectl starts tortie-node and the tortie plugin from beside
# itself. `target/release/tortiectl demo status` and `demo down` inspect and remove it.
run:
	$(CARGO) build --quiet --release -p tortie-agent --bins
	target/release/tortiectl demo up

# Every test: unit tests (no root) and the namespace integration tests (root), after
# installing the Debian packages they need. The binaries are built first because the
# integration tests run them as a user would.
# Tests that cannot run on this machine (no VM for the IPIP tier, say) fail, and are listed
# again at the end with the reason.
SKIPPED := target/debug/skipped-tests.txt

test: deps
	$(CARGO) build --workspace --bins
	rm -f $(SKIPPED)
	$(CARGO) test --workspace --no-fail-fast; status=$$?; \
	if [ -s $(SKIPPED) ]; then echo "tests that could not run here:"; cat $(SKIPPED); fi; \
	exit $$status

deps:
	./scripts/install-test-deps.sh
