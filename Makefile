# epoll-loop: build, test and install the C library.
#
# cargo does the building; this Makefile adds what cargo does not: the soname
# link, the C demos, install/uninstall with a pkg-config file, and the usual
# GNU targets. `make help` lists the targets and the variables.
#
# GNU conventions: every directory variable can be set on the command line
# (`make install PREFIX=$HOME/.local`), DESTDIR is prepended to every install
# path for staged installs and is never assigned here.

# ---------------------------------------------------------------- variables

PREFIX       ?= /usr/local
EXEC_PREFIX  ?= $(PREFIX)
LIBDIR       ?= $(EXEC_PREFIX)/lib
INCLUDEDIR   ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig

CARGO        ?= cargo
CARGO_FLAGS  ?=
CC           ?= cc
CFLAGS       ?= -O2
CXX          ?= g++
CXXFLAGS     ?= -O2
CPPFLAGS     ?=
LDFLAGS      ?=
LDLIBS       ?= -lpthread
INSTALL      ?= install
RUN_ARGS     ?=
DOXYGEN      ?= doxygen

# The crate's version, from the [package] table of Cargo.toml.
VERSION := $(shell sed -n '/^\[package\]/,/^\[/s/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml)

# cargo's output directory (honours CARGO_TARGET_DIR like cargo itself does).
TARGET_DIR   := $(or $(CARGO_TARGET_DIR),target)
BUILD_DIR    := $(TARGET_DIR)/release
EXAMPLES_DIR := $(TARGET_DIR)/c-examples
DOC_DIR      ?= $(TARGET_DIR)/doc-c

LIB_NAME     := libepoll_loop
SONAME       := $(LIB_NAME).so.0
SHARED_LIB   := $(BUILD_DIR)/$(LIB_NAME).so
STATIC_LIB   := $(BUILD_DIR)/$(LIB_NAME).a
HEADER       := include/epoll_loop.h

# What a static link needs besides the archive (`rustc --print native-static-libs`);
# keep in step with STATIC_LIBS in tests/support/c.rs.
LIBS_PRIVATE := -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc

# The directories as epoll_loop.pc spells them: relative to ${prefix} where they
# lie under it, so `pkg-config --define-prefix` can relocate an installed tree.
PC_EXEC_PREFIX := $(if $(filter $(PREFIX),$(EXEC_PREFIX)),$${prefix},$(patsubst $(PREFIX)/%,$${prefix}/%,$(EXEC_PREFIX)))
PC_LIBDIR      := $(patsubst $(EXEC_PREFIX)/%,$${exec_prefix}/%,$(LIBDIR))
PC_INCLUDEDIR  := $(patsubst $(PREFIX)/%,$${prefix}/%,$(INCLUDEDIR))

# Flags every C demo is held to (CFLAGS adds to them), and the C++ example.
C_WARN       := -std=c99 -D_GNU_SOURCE -Wall -Wextra -Wpedantic -Werror
CXX_WARN     := -std=c++17 -Wall -Wextra -Wpedantic -Werror

EXAMPLE_SRCS := $(sort $(wildcard c-examples/*.c))
EXAMPLE_BINS := $(patsubst c-examples/%.c,$(EXAMPLES_DIR)/%,$(EXAMPLE_SRCS))

.DEFAULT_GOAL := all
.DELETE_ON_ERROR:

.PHONY: all examples run test check install uninstall clean help header lint docs \
        abi abi-symbols abi-layout FORCE

# ---------------------------------------------------------------- build

## all: build the shared and static library (release) and the header
all: $(SHARED_LIB)
	@ln -sfn $(LIB_NAME).so $(BUILD_DIR)/$(SONAME)

# cargo decides what is stale (and regenerates the header); make only looks at
# the results' mtimes, so the demos are relinked only when cargo rebuilt the library.
$(SHARED_LIB) $(STATIC_LIB) &: FORCE
	$(CARGO) build --release $(CARGO_FLAGS)

## examples: compile every c-examples/*.c into target/c-examples/<name>, and c-examples/cpp/example.cpp
examples: all $(EXAMPLE_BINS) $(EXAMPLES_DIR)/cpp_example

$(EXAMPLES_DIR)/%: c-examples/%.c $(HEADER) $(SHARED_LIB) | $(EXAMPLES_DIR)
	$(CC) $(C_WARN) $(CPPFLAGS) $(CFLAGS) -Iinclude -o $@ $< \
	    $(LDFLAGS) -L$(BUILD_DIR) -Wl,-rpath,$(abspath $(BUILD_DIR)) -lepoll_loop $(LDLIBS)

# The C++ wrapper's example (tests/cpp.rs builds and runs it under ASan too).
$(EXAMPLES_DIR)/cpp_example: c-examples/cpp/example.cpp c-examples/cpp/epoll_loop.hpp $(HEADER) $(SHARED_LIB) | $(EXAMPLES_DIR)
	$(CXX) $(CXX_WARN) $(CPPFLAGS) $(CXXFLAGS) -Iinclude -Ic-examples/cpp -o $@ $< \
	    $(LDFLAGS) -L$(BUILD_DIR) -Wl,-rpath,$(abspath $(BUILD_DIR)) -lepoll_loop $(LDLIBS)

$(EXAMPLES_DIR):
	mkdir -p $@

## run: build everything, then run the echo_server demo (arguments: RUN_ARGS=...)
run: all examples
	$(EXAMPLES_DIR)/echo_server $(RUN_ARGS)

## header: regenerate include/epoll_loop.h from the Rust sources
header:
	touch build.rs
	env -u EPOLL_LOOP_HEADER $(CARGO) build --release $(CARGO_FLAGS)

# ---------------------------------------------------------------- checks

## test: run the whole test suite (Rust tests; they compile and run the C programs)
test:
	$(CARGO) test --no-fail-fast $(CARGO_FLAGS)

## check: same as test
check: test

## abi: rewrite docs/abi/symbols.txt and docs/abi/layout.txt after a deliberate ABI change
abi: abi-symbols abi-layout

## abi-symbols: rewrite docs/abi/symbols.txt from the library's exports (nm -D)
abi-symbols:
	EPOLL_LOOP_ABI_UPDATE=1 $(CARGO) test $(CARGO_FLAGS) --test c_abi -- exported_symbols_match_docs_abi_symbols_txt

## abi-layout: rewrite docs/abi/layout.txt from the header's structs as C sees them
abi-layout:
	EPOLL_LOOP_ABI_UPDATE=1 $(CARGO) test $(CARGO_FLAGS) --test c_abi -- struct_layouts_agree_between_c_rust_and_docs_abi_layout_txt

## lint: rustfmt check and clippy with warnings as errors
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets $(CARGO_FLAGS) -- -D warnings

# ---------------------------------------------------------------- fuzzing

FUZZ_SECS    ?= 60
FUZZ_TARGETS := api_sequence echo
# Extra libFuzzer flags, e.g. FUZZ_ARGS=-seed=1 (CI) for a repeatable run.
FUZZ_ARGS    ?=

.PHONY: fuzz

## fuzz: run each cargo-fuzz target (fuzz/) for FUZZ_SECS seconds (default 60); new inputs go to fuzz/work/
fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	@for t in $(FUZZ_TARGETS); do \
	    mkdir -p fuzz/work/$$t && echo "fuzzing $$t for $(FUZZ_SECS) s" && \
	    RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$t fuzz/work/$$t fuzz/corpus/$$t -- \
	        -max_total_time=$(FUZZ_SECS) -print_final_stats=1 $(FUZZ_ARGS) || exit 1; \
	done

# ---------------------------------------------------------------- sanitizers

# make sanitize: the library ITSELF built with Rust's sanitizers (the C tests
# under ASan only instrument the C side). cargo builds the test binaries, the
# rlib they link and the .so the C tests load (tests/support: lib_dir() is the
# test binary's own deps/ directory) with -Zsanitizer=...; -Zbuild-std rebuilds
# std the same way, so std's own code is checked too and its synchronisation is
# visible to ThreadSanitizer (no false races). That needs a nightly toolchain
# with rust-src: make sanitize installs nothing, and stops with the rustup
# command to run when either is missing. Each sanitizer has its own target
# directory, apart from the normal build.
NIGHTLY         ?= nightly
SANITIZE_TARGET ?= $(shell rustc -vV 2>/dev/null | sed -n 's/^host: //p')
ASAN_DIR        := $(TARGET_DIR)/sanitize-address
TSAN_DIR        := $(TARGET_DIR)/sanitize-thread
# Extra arguments for the test binaries of the main ASan and TSan runs, e.g.
# SANITIZE_ARGS='--ignored NAME' to run an #[ignore]d reproducer.
SANITIZE_ARGS   ?=
# Not run under a sanitizer: the test that counts the owner check's system
# calls runs a C program under valgrind, which cannot load an instrumented
# library.
SANITIZE_SKIP   := --skip the_owner_check_makes_no_syscall
SANITIZE_TEST    = $(CARGO) +$(NIGHTLY) test -Zbuild-std --target $(SANITIZE_TARGET) \
                   --no-fail-fast $(CARGO_FLAGS)

# ASan + LeakSanitizer: the Rust tests that drive the C ABI from threads and
# with misuse, and the lib unit tests; then the C programs (gcc's ASan runtime
# in the C program serves the instrumented .so as well): tests/c/stream_test.c
# and tests/c/signals_posts_test.c through tests/stream.rs and
# tests/signals_posts.rs, and the tests of c_abi and contract whose names say
# under_asan or under_lsan (tests/c/loop_test.c, tests/c/contract_test.c; their
# static-link and valgrind variants cannot use an instrumented library).
ASAN_TESTS   := --lib --test threads --test misuse_threads --test handles --test loop_misuse \
                --test stream --test signals_posts --test echo_server --test sanitize_races
ASAN_C_TESTS := --test c_abi --test contract
ASAN_C_NAMES := under_asan under_lsan
ASAN_OPTS    := detect_leaks=1:abort_on_error=0:strict_string_checks=1

# TSan: the tests whose threads run inside the test process (tests that fork
# and exec C programs tell TSan nothing). signals_posts: only its in-process
# threads test.
TSAN_TESTS   := --lib --test threads --test misuse_threads --test handles --test echo_server \
                --test sanitize_races
TSAN_POSTS   := posts_from_8_threads_all_run_in_order_on_the_loop_thread
# exitcode: a report fails the test binary even when every test passed.
TSAN_OPTS    := exitcode=66:second_deadlock_stack=1

.PHONY: sanitize sanitize-address sanitize-thread sanitize-check

## sanitize: run the C ABI, thread and misuse tests against the library built with ASan+LSan, then TSan (nightly + rust-src)
sanitize: sanitize-address sanitize-thread

## sanitize-address: the ASan+LSan part of make sanitize (target/sanitize-address)
sanitize-address: sanitize-check
	RUSTFLAGS='-Zsanitizer=address' ASAN_OPTIONS='$(ASAN_OPTS)' \
	    $(SANITIZE_TEST) --target-dir $(ASAN_DIR) $(ASAN_TESTS) -- $(SANITIZE_SKIP) $(SANITIZE_ARGS)
	RUSTFLAGS='-Zsanitizer=address' ASAN_OPTIONS='$(ASAN_OPTS)' \
	    $(SANITIZE_TEST) --target-dir $(ASAN_DIR) $(ASAN_C_TESTS) -- $(ASAN_C_NAMES)

## sanitize-thread: the TSan part of make sanitize (target/sanitize-thread)
sanitize-thread: sanitize-check
	RUSTFLAGS='-Zsanitizer=thread' TSAN_OPTIONS='$(TSAN_OPTS)' \
	    $(SANITIZE_TEST) --target-dir $(TSAN_DIR) $(TSAN_TESTS) -- $(SANITIZE_SKIP) $(SANITIZE_ARGS)
	RUSTFLAGS='-Zsanitizer=thread' TSAN_OPTIONS='$(TSAN_OPTS)' \
	    $(SANITIZE_TEST) --target-dir $(TSAN_DIR) --test signals_posts -- --exact $(TSAN_POSTS)

# rustc +TOOLCHAIN fails when that toolchain is not installed (RUSTUP_AUTO_INSTALL=0:
# never let rustup install it behind our back); rust-src is where -Zbuild-std
# finds std's sources.
sanitize-check:
	@sysroot=$$(RUSTUP_AUTO_INSTALL=0 rustc +$(NIGHTLY) --print sysroot 2>/dev/null) || { \
	    echo "make sanitize: the $(NIGHTLY) Rust toolchain is not installed (the sanitizers" \
	        "need nightly); install it with: rustup toolchain install $(NIGHTLY) --profile minimal" >&2; \
	    exit 1; }; \
	test -f "$$sysroot/lib/rustlib/src/rust/library/Cargo.lock" || { \
	    echo "make sanitize: the $(NIGHTLY) toolchain has no rust-src (-Zbuild-std needs" \
	        "std's sources); install it with: rustup component add rust-src --toolchain $(NIGHTLY)" >&2; \
	    exit 1; }
	@test -n "$(SANITIZE_TARGET)" || { \
	    echo "make sanitize: cannot read the host target from rustc -vV; set SANITIZE_TARGET" >&2; \
	    exit 1; }

# ---------------------------------------------------------------- benchmarks

.PHONY: bench bench-smoke

## bench: benchmark the echo server against C epoll, libuv, libevent, poll() (minutes; bench/results/)
bench:
	python3 bench/run.py

## bench-smoke: a few seconds: every benchmark server echoes correctly, the loadgen reports numbers
bench-smoke:
	python3 bench/run.py --smoke

# ---------------------------------------------------------------- install

## install: install header, libraries and epoll_loop.pc under PREFIX (and DESTDIR)
install: all
	@test -n "$(VERSION)" || { echo "cannot read the version from Cargo.toml" >&2; exit 1; }
	$(INSTALL) -d $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(PKGCONFIGDIR)
	$(INSTALL) -m 644 $(HEADER) $(DESTDIR)$(INCLUDEDIR)/epoll_loop.h
	$(INSTALL) -m 755 $(SHARED_LIB) $(DESTDIR)$(LIBDIR)/$(LIB_NAME).so.$(VERSION)
	ln -sfn $(LIB_NAME).so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sfn $(SONAME) $(DESTDIR)$(LIBDIR)/$(LIB_NAME).so
	$(INSTALL) -m 644 $(STATIC_LIB) $(DESTDIR)$(LIBDIR)/$(LIB_NAME).a
	@# Written straight into place: two installs with different PREFIXes may run at once.
	@echo "writing $(DESTDIR)$(PKGCONFIGDIR)/epoll_loop.pc"
	@printf '%s\n' \
	    'prefix=$(PREFIX)' \
	    'exec_prefix=$(PC_EXEC_PREFIX)' \
	    'libdir=$(PC_LIBDIR)' \
	    'includedir=$(PC_INCLUDEDIR)' \
	    '' \
	    'Name: epoll_loop' \
	    'Description: A Linux epoll event loop with callbacks, timers and an echo server' \
	    'Version: $(VERSION)' \
	    'Libs: -L$${libdir} -lepoll_loop' \
	    'Libs.private: $(LIBS_PRIVATE)' \
	    'Cflags: -I$${includedir}' > $(DESTDIR)$(PKGCONFIGDIR)/epoll_loop.pc
	chmod 644 $(DESTDIR)$(PKGCONFIGDIR)/epoll_loop.pc

## uninstall: remove exactly the files install put (directories are left alone)
uninstall:
	rm -f $(DESTDIR)$(INCLUDEDIR)/epoll_loop.h
	rm -f $(DESTDIR)$(LIBDIR)/$(LIB_NAME).so.$(VERSION)
	rm -f $(DESTDIR)$(LIBDIR)/$(SONAME)
	rm -f $(DESTDIR)$(LIBDIR)/$(LIB_NAME).so
	rm -f $(DESTDIR)$(LIBDIR)/$(LIB_NAME).a
	rm -f $(DESTDIR)$(PKGCONFIGDIR)/epoll_loop.pc

# ---------------------------------------------------------------- docs

# Doxygen's settings, fed on stdin: the header (every global is documented, but
# the generated header has no @file block, hence EXTRACT_ALL) with the README
# as the main page.
DOXYFILE_LINES := \
    'PROJECT_NAME = epoll-loop' \
    'PROJECT_NUMBER = $(VERSION)' \
    'PROJECT_BRIEF = "A Linux epoll event loop for C, C++ and FFI"' \
    'INPUT = $(HEADER) README.md' \
    'USE_MDFILE_AS_MAINPAGE = README.md' \
    'OUTPUT_DIRECTORY = $(DOC_DIR)' \
    'OPTIMIZE_OUTPUT_FOR_C = YES' \
    'JAVADOC_AUTOBRIEF = YES' \
    'EXTRACT_ALL = YES' \
    'FULL_PATH_NAMES = NO' \
    'GENERATE_HTML = YES' \
    'GENERATE_LATEX = NO' \
    'HAVE_DOT = NO' \
    'QUIET = YES' \
    'WARN_LOGFILE = $(DOC_DIR)/doxygen-warnings.txt'

## docs: render the header's docs to HTML with Doxygen (target/doc-c/html), if installed
docs:
	@if ! command -v $(DOXYGEN) >/dev/null 2>&1; then \
	    echo "make docs: doxygen is not installed ($(DOXYGEN) not found), so no HTML was made;" \
	        "install it (apt-get install doxygen) and run make docs again." \
	        "The documentation is in $(HEADER) itself."; \
	else \
	    mkdir -p $(DOC_DIR) && \
	    printf '%s\n' $(DOXYFILE_LINES) | $(DOXYGEN) - && \
	    echo "make docs: wrote $(DOC_DIR)/html/index.html (warnings: $(DOC_DIR)/doxygen-warnings.txt)"; \
	fi

# ---------------------------------------------------------------- misc

## clean: remove everything cargo and this Makefile built (the target directory)
clean:
	$(CARGO) clean

## help: list the targets and the variables
help:
	@echo 'epoll-loop $(VERSION): make [TARGET] [VARIABLE=value ...]'
	@echo
	@echo 'Targets:'
	@sed -n 's/^## \([a-z-]*\): \(.*\)/  \1\t\2/p' $(MAKEFILE_LIST) | expand -t 19
	@echo
	@echo 'Variables (current value):'
	@echo '  PREFIX        $(PREFIX)'
	@echo '  EXEC_PREFIX   $(EXEC_PREFIX)'
	@echo '  LIBDIR        $(LIBDIR)'
	@echo '  INCLUDEDIR    $(INCLUDEDIR)'
	@echo '  PKGCONFIGDIR  $(PKGCONFIGDIR)'
	@echo '  DESTDIR       $(DESTDIR)  (staging root prepended to every install path)'
	@echo '  CARGO         $(CARGO)'
	@echo '  CARGO_FLAGS   $(CARGO_FLAGS)  (extra flags for cargo build/test/clippy)'
	@echo '  CC            $(CC)'
	@echo '  CFLAGS        $(CFLAGS)  (added to: $(C_WARN))'
	@echo '  CXX           $(CXX)'
	@echo '  CXXFLAGS      $(CXXFLAGS)  (added to: $(CXX_WARN))'
	@echo '  CPPFLAGS      $(CPPFLAGS)'
	@echo '  LDFLAGS       $(LDFLAGS)'
	@echo '  LDLIBS        $(LDLIBS)'
	@echo '  RUN_ARGS      $(RUN_ARGS)  (arguments for make run, e.g. RUN_ARGS="--port 0")'
	@echo '  DOXYGEN       $(DOXYGEN)  (for make docs)'
	@echo '  DOC_DIR       $(DOC_DIR)  (where make docs writes html/)'
	@echo '  NIGHTLY       $(NIGHTLY)  (the toolchain make sanitize uses; needs rust-src)'
	@echo '  SANITIZE_TARGET  $(SANITIZE_TARGET)  (the target make sanitize builds std for)'
	@echo '  SANITIZE_ARGS $(SANITIZE_ARGS)  (test-binary arguments for make sanitize, e.g. --ignored NAME)'
	@echo
	@echo 'Environment: CARGO_TARGET_DIR (default target), EPOLL_LOOP_HEADER=check'
	@echo '(build without touching include/; CI uses it so header drift fails a test).'

FORCE:
