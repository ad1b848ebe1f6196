#!/usr/bin/env bash
# Install Debian packages the test suite uses: chromium (browser tests),
# dataset-fashion-mnist (Fashion-MNIST without internet) and postgresql (the server
# that tests/test_tune_postgres.py starts for `mnistkit tune --storage`).
# Not root on Debian: says what will skip and exits 0. Root on Debian (CI): a failed install
# exits 1, because there the tests needing these packages fail rather than skip (tests/synthetic.py).
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ] || need+=(dataset-fashion-mnist)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: not root on Debian; tests needing ${need[*]} will skip" >&2
  exit 0
fi
echo "system-deps: apt-get install ${need[*]}"
if ! { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; }; then
  echo "system-deps: could not install ${need[*]} (root on Debian: the tests need them)" >&2
  exit 1
fi
exit 0
