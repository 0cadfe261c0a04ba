#!/bin/bash
# Builds crisp's libFuzzer targets with clang 14 (ASan + UBSan + libFuzzer) and
# runs them. Bazel is not involved: its autodetected gcc toolchain builds the
# corpus replay tests in this directory, and this script compiles the same
# target sources with clang++ directly. See README.md.
#
#   test/fuzz/build_fuzzers.sh build [TARGET...]        build (all when none given)
#   test/fuzz/build_fuzzers.sh run TARGET SECONDS|-runs=N [LIBFUZZER_FLAG...]
#   test/fuzz/build_fuzzers.sh replay [TARGET...]       the stored corpus once, sanitized
#   test/fuzz/build_fuzzers.sh merge TARGET             minimize the work corpus into the stored one
#   test/fuzz/build_fuzzers.sh add TARGET FILE...       store inputs (e.g. a crash) by SHA-256
#   test/fuzz/build_fuzzers.sh coverage TARGET [DIR...]  line coverage of crisp's sources
#                                                       reached by the stored corpus (or DIRs)
#   test/fuzz/build_fuzzers.sh seed [WIRE_FILE...]      regenerate the seed inputs, adding
#                                                       seeds from raw SPDY byte streams
#                                                       (e.g. recorded by record_spdy.py)
#
# TARGET is spdy_codec, spdy_header_block, config, websocket, base64,
# http1_head or cri_request. Binaries, the growing
# work corpus and crash artifacts live under $CRISP_FUZZ_OUT (default
# /tmp/crisp-fuzz-$UID); the stored corpus is test/fuzz/corpus/TARGET/, one file
# per input named by its SHA-256. One fuzzing process at a time, one worker.

set -euo pipefail
shopt -s nullglob

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${CRISP_FUZZ_OUT:-/tmp/crisp-fuzz-$(id -u)}"
CXX="${CXX:-clang++-14}"
TARGETS=(spdy_codec spdy_header_block config websocket base64 http1_head cri_request)

COMMON_FLAGS=(-std=c++17 -g -O1 -fno-omit-frame-pointer -Wall -Wextra -I"$ROOT")
# CRISP_FUZZ_SANITIZERS=leak trades ASan's and UBSan's checks for about twice
# the inputs per second while still failing on crashes, leaks and timeouts
# (long runs; clang 14 does not link UBSan's runtime beside LSan's here). Give
# each set its own CRISP_FUZZ_OUT.
SANITIZERS="${CRISP_FUZZ_SANITIZERS:-address,undefined}"
FUZZ_FLAGS=(-fsanitize=fuzzer,"$SANITIZERS" -fno-sanitize-recover=undefined)

# The system libraries, linked by name as //third_party:abseil and friends do.
ABSL_LIBS=(-labsl_statusor -labsl_status -labsl_cord -labsl_cordz_info -labsl_cordz_handle
  -labsl_cordz_functions -labsl_cord_internal -labsl_exponential_biased -labsl_synchronization
  -labsl_graphcycles_internal -labsl_stacktrace -labsl_symbolize -labsl_debugging_internal
  -labsl_demangle_internal -labsl_malloc_internal -labsl_time -labsl_civil_time
  -labsl_time_zone -labsl_str_format_internal -labsl_strings -labsl_strings_internal
  -labsl_strerror -labsl_hash -labsl_city -labsl_low_level_hash -labsl_raw_hash_set
  -labsl_hashtablez_sampler -labsl_int128 -labsl_bad_optional_access
  -labsl_bad_variant_access -labsl_throw_delegate -labsl_base -labsl_spinlock_wait
  -labsl_raw_logging_internal -labsl_log_severity -latomic -lrt)

# Sources and libraries of each target: the fuzz target file plus the srcs of
# the cc_library targets it depends on in the Bazel build (test/fuzz/BUILD).
SPDY_SRCS=(source/codec/spdy/codec.cc source/codec/spdy/dictionary.cc
  source/codec/spdy/header_block.cc source/common/buffer.cc)
SPDY_LIBS=(-levent -lz "${ABSL_LIBS[@]}")

sources_of() {
  case "$1" in
    spdy_codec) echo test/fuzz/spdy_codec_fuzz.cc "${SPDY_SRCS[@]}" ;;
    spdy_header_block)
      echo test/fuzz/spdy_header_block_fuzz.cc source/codec/spdy/header_block.cc \
        source/codec/spdy/dictionary.cc
      ;;
    config) echo test/fuzz/config_fuzz.cc source/config/config.cc source/config/host_port.cc ;;
    websocket)
      echo test/fuzz/websocket_fuzz.cc source/codec/websocket/ws_codec.cc \
        source/codec/websocket/channel.cc source/codec/websocket/base64.cc \
        source/common/buffer.cc source/common/time.cc
      ;;
    base64) echo test/fuzz/base64_fuzz.cc source/codec/websocket/base64.cc source/common/buffer.cc ;;
    http1_head)
      echo test/fuzz/http1_head_fuzz.cc source/stream/http1_head_parser.cc \
        source/stream/http1_route.cc source/stream/negotiation.cc source/stream/http1_response.cc \
        source/stream/upgrade.cc source/codec/websocket/handshake.cc \
        source/codec/websocket/base64.cc source/session/request.cc source/common/buffer.cc \
        source/common/dispatcher.cc
      ;;
    cri_request)
      echo test/fuzz/cri_request_fuzz.cc source/cri/runtime_service.cc source/cri/stream_url.cc \
        source/cri/grpc_common.cc \
        source/cache/token_cache.cc source/admin/metrics.cc source/common/logger.cc \
        source/common/buffer.cc source/common/dispatcher.cc source/common/time.cc \
        source/session/request.cc
      ;;
    *) echo "unknown target: $1 (one of: ${TARGETS[*]})" >&2; exit 2 ;;
  esac
}

libs_of() {
  case "$1" in
    spdy_codec) echo "${SPDY_LIBS[@]}" ;;
    spdy_header_block) echo -lz "${ABSL_LIBS[@]}" ;;
    config) echo -lyaml-cpp "${ABSL_LIBS[@]}" ;;
    websocket) echo -lwslay -lcrypto -levent "${ABSL_LIBS[@]}" ;;
    base64) echo -lcrypto -levent "${ABSL_LIBS[@]}" ;;
    cri_request) echo -lnghttp2 -lprotobuf -lspdlog -lfmt -pthread -levent -levent_pthreads \
      "${ABSL_LIBS[@]}" ;;
    http1_head) echo -lhttp_parser -lcrypto -levent -levent_pthreads "${ABSL_LIBS[@]}" ;;
  esac
}

# The CRI messages, compiled by the system protoc as api/BUILD does; built
# sanitized but without coverage instrumentation (the parsing itself happens
# in libprotobuf).
proto_object() {
  local gen="$OUT/gen" obj="$OUT/obj/api.pb.o"
  if [[ ! -f "$obj" || "$ROOT/api/runtime/v1/api.proto" -nt "$obj" ]]; then
    mkdir -p "$gen" "$OUT/obj"
    (cd "$ROOT" && protoc --proto_path=. --cpp_out="$gen" api/runtime/v1/api.proto)
    echo "compiling api/runtime/v1/api.pb.cc" >&2
    "$CXX" "${COMMON_FLAGS[@]}" -I"$gen" -fsanitize="$SANITIZERS" -Wno-unused-parameter \
      -c "$gen/api/runtime/v1/api.pb.cc" -o "$obj"
  fi
  echo "$obj"
}

build_one() {
  local target="$1" obj_dir="$OUT/obj/$1" objs=() src obj
  local extra_flags=(-I"$OUT/gen" -DSPDLOG_SHARED_LIB -DSPDLOG_COMPILED_LIB -DSPDLOG_FMT_EXTERNAL)
  mkdir -p "$obj_dir" "$OUT/bin"
  if [[ "$target" == cri_request ]]; then
    objs+=("$(proto_object)")
  fi
  # One object per source so that a rebuild after an edit is quick.
  for src in $(sources_of "$target"); do
    obj="$obj_dir/$(echo "$src" | tr / _).o"
    # Rebuilt when the source or any header of crisp's is newer: an object
    # built against an older class layout would break the link silently.
    if [[ ! -f "$obj" || "$ROOT/$src" -nt "$obj" ||
      -n "$(find "$ROOT/source" "$ROOT/test/fuzz" -name '*.h' -newer "$obj" -print -quit)" ]]; then
      echo "compiling $src" >&2
      "$CXX" "${COMMON_FLAGS[@]}" "${extra_flags[@]}" "${FUZZ_FLAGS[@]}" -c "$ROOT/$src" -o "$obj"
    fi
    objs+=("$obj")
  done
  # shellcheck disable=SC2046
  "$CXX" "${FUZZ_FLAGS[@]}" "${objs[@]}" -o "$OUT/bin/${target}_fuzz" $(libs_of "$target")
  echo "$OUT/bin/${target}_fuzz"
}

# Copies files into a corpus directory under their SHA-256, skipping duplicates.
store() {
  local dir="$1" file sum
  shift
  mkdir -p "$dir"
  for file in "$@"; do
    sum="$(sha256sum "$file" | cut -d' ' -f1)"
    if [[ ! -f "$dir/$sum" ]]; then
      cp "$file" "$dir/$sum"
      chmod 644 "$dir/$sum"
    fi
  done
}

check_target() {
  local t
  for t in "${TARGETS[@]}"; do
    [[ "$t" == "$1" ]] && return 0
  done
  echo "unknown target: $1 (one of: ${TARGETS[*]})" >&2
  exit 2
}

libfuzzer_flags() {
  local target="$1"
  mkdir -p "$OUT/artifacts/$target"
  local flags=(-timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 -print_final_stats=1
    -artifact_prefix="$OUT/artifacts/$target/")
  if [[ -f "$ROOT/test/fuzz/dicts/$target.dict" ]]; then
    flags+=(-dict="$ROOT/test/fuzz/dicts/$target.dict")
  fi
  echo "${flags[@]}"
}

cmd="${1:-}"
shift || true
case "$cmd" in
  build)
    [[ $# -eq 0 ]] && set -- "${TARGETS[@]}"
    for t in "$@"; do
      check_target "$t"
      build_one "$t" >/dev/null
    done
    ;;
  run)
    [[ $# -ge 2 ]] || { echo "usage: $0 run TARGET SECONDS|-runs=N [FLAG...]" >&2; exit 2; }
    target="$1" budget="$2"
    shift 2
    check_target "$target"
    bin="$(build_one "$target")"
    mkdir -p "$OUT/corpus/$target" "$OUT/artifacts/$target"
    if [[ "$budget" =~ ^[0-9]+$ ]]; then
      budget="-max_total_time=$budget"
    fi
    # The work corpus comes first: new inputs are written there, never into
    # the tree. -workers=1: one process on a shared machine.
    # shellcheck disable=SC2046
    exec "$bin" $(libfuzzer_flags "$target") -workers=1 "$budget" "$@" \
      "$OUT/corpus/$target" "$ROOT/test/fuzz/corpus/$target"
    ;;
  replay)
    [[ $# -eq 0 ]] && set -- "${TARGETS[@]}"
    for t in "$@"; do
      check_target "$t"
      bin="$(build_one "$t")"
      # shellcheck disable=SC2046
      "$bin" $(libfuzzer_flags "$t") -runs=0 "$ROOT/test/fuzz/corpus/$t"
    done
    ;;
  merge)
    [[ $# -eq 1 ]] || { echo "usage: $0 merge TARGET" >&2; exit 2; }
    target="$1"
    check_target "$target"
    bin="$(build_one "$target")"
    merged="$(mktemp -d)"
    # Keeps the stored inputs and adds those of the work corpus that reach
    # coverage the stored ones do not: libFuzzer's merge adds to its first
    # directory only inputs with features that directory lacks.
    cp "$ROOT/test/fuzz/corpus/$target"/* "$merged"/
    # shellcheck disable=SC2046
    "$bin" $(libfuzzer_flags "$target") -merge=1 "$merged" "$OUT/corpus/$target"
    for f in "$merged"/*; do
      [[ -e "$ROOT/test/fuzz/corpus/$target/$(basename "$f")" ]] && rm -f "$f"
    done
    if compgen -G "$merged/*" >/dev/null; then
      store "$ROOT/test/fuzz/corpus/$target" "$merged"/*
    fi
    rm -rf "$merged"
    ;;
  add)
    [[ $# -ge 2 ]] || { echo "usage: $0 add TARGET FILE..." >&2; exit 2; }
    target="$1"
    shift
    check_target "$target"
    store "$ROOT/test/fuzz/corpus/$target" "$@"
    ;;
  coverage)
    [[ $# -ge 1 ]] || { echo "usage: $0 coverage TARGET [CORPUS_DIR...]" >&2; exit 2; }
    target="$1"
    shift
    check_target "$target"
    [[ $# -eq 0 ]] && set -- "$ROOT/test/fuzz/corpus/$target"
    work="$(mktemp -d)"
    srcs=()
    for src in $(sources_of "$target"); do
      srcs+=("$ROOT/$src")
    done
    # shellcheck disable=SC2046
    "$CXX" "${COMMON_FLAGS[@]}" -fsanitize=fuzzer -fprofile-instr-generate -fcoverage-mapping \
      "${srcs[@]}" -o "$work/${target}_cov" $(libs_of "$target")
    LLVM_PROFILE_FILE="$work/run.profraw" "$work/${target}_cov" -runs=0 "$@" >/dev/null 2>&1
    llvm-profdata-14 merge -sparse "$work/run.profraw" -o "$work/run.profdata"
    # Only crisp's own sources, not the fuzz target itself.
    llvm-cov-14 report "$work/${target}_cov" -instr-profile="$work/run.profdata" \
      "${srcs[@]:1}"
    rm -rf "$work"
    ;;
  seed)
    work="$(mktemp -d)"
    "$CXX" "${COMMON_FLAGS[@]}" -fsanitize=address,undefined \
      "$ROOT/test/fuzz/seed_writer.cc" "$ROOT/source/codec/spdy/codec.cc" \
      "$ROOT/source/codec/spdy/dictionary.cc" "$ROOT/source/codec/spdy/header_block.cc" \
      "$ROOT/source/common/buffer.cc" -o "$work/seed_writer" "${SPDY_LIBS[@]}"
    mkdir -p "$work/wire"
    if command -v go >/dev/null && [[ -d /usr/share/gocode/src/github.com/moby/spdystream ]]; then
      (cd "$ROOT/test/fuzz/spdystream_seeds" &&
        GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE="$work/gocache" go run main.go "$work/wire")
    else
      echo "note: Go or spdystream's sources missing; no spdystream_seeds output" >&2
    fi
    for file in "$@"; do
      cp "$file" "$work/wire/"
    done
    "$work/seed_writer" "$work/seeds" "$work"/wire/*
    python3 "$ROOT/test/fuzz/stream_seeds.py" "$work/seeds" "$ROOT"/test/fuzz/recordings/*
    for t in "${TARGETS[@]}"; do
      store "$ROOT/test/fuzz/corpus/$t" "$work/seeds/$t"/*
    done
    store "$ROOT/test/fuzz/corpus/config" "$ROOT"/configs/*.yaml
    rm -rf "$work"
    ;;
  *)
    sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
