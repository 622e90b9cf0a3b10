# The two commands a newcomer needs (see README.md):
#   make dev    runs depositd on its embedded defaults: SQLite + a local anvil dev chain
#   make test   runs the whole test suite on SQLite and PostgreSQL (TEST_POSTGRES_URL, default the local server; the browser
#               test needs Debian's chromium, which .ci/run installs)

.PHONY: dev test lint bench

# anvil comes from the npm registry (@foundry-rs/anvil, pinned exactly in package.json; the rest
# locked by package-lock.json). `npm install`, not `npm ci`: npm 11 writes a lock without the other
# platforms' optional anvil packages and its own `npm ci` then refuses that lock.
node_modules/.bin/anvil: package.json package-lock.json
	npm install --no-audit --no-fund
	@touch $@

dev: node_modules/.bin/anvil
	cargo run --bin depositd -- dev

# The Rust suite, then the checkout page in a real browser (it drives the binary cargo just built).
test: node_modules/.bin/anvil
	cargo test --workspace
	node --test tests/browser/

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	python3 .ci/module_cycles.py core/src rpc/src watcher/src settler/src api/src webhooks/src testkit/src src bench/src

# The benchmark harness (bench/): starts its own anvil and databases (PostgreSQL at
# BENCH_POSTGRES_URL, default postgres://postgres@127.0.0.1:5432/postgres), prints the figures and
# writes them to BENCHMARKS.md.
bench: node_modules/.bin/anvil
	cargo run --release -p depositd-bench -- all
