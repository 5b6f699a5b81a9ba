# ringrelay - build, test and run.
#
#   make            build/ringrelay and the other programs (quiet; V=1 shows commands)
#   make asan       the same under AddressSanitizer + UBSan, into build/asan/
#   make fuzz       libFuzzer targets into build/fuzz/
#   make test       install what is missing, build, run unit, fuzz and system tests
#   make run        install what is missing, build, start the relay from the example config
#   make bench      ringrelay against Postfix and the ceiling, scenarios a-e (bench/compare.sh;
#                   BENCH_ARGS="-r 1 -m 2000" passes options)
#   make bench-accept  the older accept-rate comparison with smtp-source (bench/accept.sh)

V ?= 0
ifeq ($(V),1)
Q :=
else
Q := @
endif

CC      ?= gcc
BUILD   := build
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo unknown)

CPPFLAGS := -D_GNU_SOURCE -DRR_VERSION='"$(VERSION)"' -I. -I$(BUILD)/bpf
WARN     := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter -Wformat=2 -Wvla
OPT      ?= -O2 -g
CFLAGS   := $(OPT) -std=gnu11 -pthread -msse4.2 -fno-strict-aliasing $(WARN)
LIBS     := -luring -linih -lcares -lwolfssl -lcrypt -lidn2 -lbpf -lpthread
# jemalloc replaces malloc by being linked; the sanitizer builds keep their own allocator.
ALLOC    := -ljemalloc

# Programs: one main file each. Everything else in core/ net/ tls/ is the shared library.
PROG_MAINS := core/main.c core/ringctl.c bench/ringbench.c bench/ringsink.c
PROG_NAMES := ringrelay ringctl ringbench ringsink
PROGS      := $(foreach p,$(PROG_NAMES),$(BUILD)/$(p))
LIB_SRC    := $(filter-out $(PROG_MAINS),$(wildcard core/*.c net/*.c tls/*.c)) \
              $(filter-out %.bpf.c,$(wildcard bpf/*.c))
# BPF programs: bpf/NAME.bpf.c -> NAME.bpf.o (clang, CO-RE against this kernel's BTF) ->
# NAME.skel.h (bpftool), which bpf/NAME.c includes.
BPF_SRC    := $(wildcard bpf/*.bpf.c)
BPF_SKEL   := $(BPF_SRC:bpf/%.bpf.c=$(BUILD)/bpf/%.skel.h)
BPF_ARCH   := $(shell uname -m | sed 's/x86_64/x86/; s/aarch64/arm64/')
LIB_OBJ    := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
BENCH_SRC  := $(filter-out $(PROG_MAINS),$(wildcard bench/*.c))
BENCH_OBJ  := $(BENCH_SRC:%.c=$(BUILD)/obj/%.o)
UNIT_SRC   := $(wildcard tests/unit/test_*.c)
UNIT_BIN   := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
FUZZ_SRC   := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN   := $(FUZZ_SRC:tests/fuzz/%.c=$(BUILD)/fuzz/%)

ASAN_FLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

.PHONY: all asan fuzz test unit run bench bench-accept deps clean
all: $(filter $(BUILD)/ringrelay $(BUILD)/ringctl,$(PROGS)) $(if $(wildcard bench/ringbench.c),$(BUILD)/ringbench) $(if $(wildcard bench/ringsink.c),$(BUILD)/ringsink) \
     $(if $(wildcard bench/tools/connflood.c),$(BUILD)/connflood)

$(BUILD)/bpf/vmlinux.h:
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  BTF     $@")
	$(Q)bpftool btf dump file /sys/kernel/btf/vmlinux format c > $@.tmp && mv $@.tmp $@

$(BUILD)/bpf/%.bpf.o: bpf/%.bpf.c bpf/%.h $(BUILD)/bpf/vmlinux.h
	@$(if $(Q),echo "  BPF     $<")
	$(Q)clang -g -O2 -target bpf -mcpu=v3 -D__TARGET_ARCH_$(BPF_ARCH) -I$(BUILD)/bpf -I. \
		-Wall -Werror -c $< -o $@

$(BUILD)/bpf/%.skel.h: $(BUILD)/bpf/%.bpf.o
	@$(if $(Q),echo "  SKEL    $@")
	$(Q)bpftool gen skeleton $< name $(notdir $*)_bpf > $@.tmp && mv $@.tmp $@

.PRECIOUS: $(BUILD)/bpf/%.bpf.o
# Each loader includes its skeleton.
$(foreach n,$(BPF_SRC:bpf/%.bpf.c=%),$(eval $(BUILD)/obj/bpf/$(n).o: $(BUILD)/bpf/$(n).skel.h))

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c $< -o $@

# The version is compiled into main.o and metrics.o: rebuild them when it changes.
$(BUILD)/version.stamp: FORCE
	@mkdir -p $(BUILD)
	@echo '$(VERSION)' | cmp -s - $@ || echo '$(VERSION)' > $@
$(BUILD)/obj/core/main.o $(BUILD)/obj/core/metrics.o: $(BUILD)/version.stamp
.PHONY: FORCE
FORCE:

$(BUILD)/libringrelay.a: $(LIB_OBJ)
	@$(if $(Q),echo "  AR      $@")
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/ringrelay: $(BUILD)/obj/core/main.o $(BUILD)/libringrelay.a
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS) -o $@ $^ $(LIBS) $(ALLOC)

$(BUILD)/ringctl: $(BUILD)/obj/core/ringctl.o $(BUILD)/libringrelay.a
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS) -o $@ $^ $(LIBS) $(ALLOC)

$(BUILD)/ringbench: $(BUILD)/obj/bench/ringbench.o $(BENCH_OBJ) $(BUILD)/libringrelay.a
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS) -o $@ $^ $(LIBS) $(ALLOC) -lm

$(BUILD)/ringsink: $(BUILD)/obj/bench/ringsink.o $(BENCH_OBJ) $(BUILD)/libringrelay.a
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS) -o $@ $^ $(LIBS) $(ALLOC)

# bench/tools/: stand-alone load tools, one file each, linking nothing of ours (bench/flood.sh).
$(BUILD)/connflood: bench/tools/connflood.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ $<

TEST_HDR := $(wildcard tests/unit/*.h)

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libringrelay.a $(TEST_HDR)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  TEST    $@")
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ $< $(BUILD)/libringrelay.a $(LIBS) -lm

# The histogram's test compiles bench/hist.c in (the bench sources are not in the library).
$(BUILD)/tests/test_hist: bench/hist.c bench/hist.h

# Sanitizer build: a separate tree, same sources, no jemalloc.
asan:
	$(Q)$(MAKE) --no-print-directory BUILD=$(BUILD)/asan OPT="$(ASAN_FLAGS)" ALLOC= \
		$(BUILD)/asan/ringrelay $(BUILD)/asan/ringctl \
		$(UNIT_SRC:tests/unit/%.c=$(BUILD)/asan/tests/%)

$(BUILD)/fuzz/%: tests/fuzz/%.c $(LIB_SRC) $(TEST_HDR) $(BPF_SKEL)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  FUZZ    $@")
	$(Q)clang $(CPPFLAGS) -std=gnu11 -g -O1 -msse4.2 -fsanitize=fuzzer,address,undefined \
		-o $@ $< $(LIB_SRC) $(LIBS)

fuzz: $(FUZZ_BIN)

deps:
	$(Q)sh deploy/install-deps.sh

unit: $(UNIT_BIN)

test: deps
	$(Q)$(MAKE) --no-print-directory -j$(shell nproc) all asan fuzz
	$(Q)sh tests/run.sh

run: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)sh deploy/run-demo.sh

bench: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)BUILD_DIR=$(BUILD) bash bench/compare.sh $(BENCH_ARGS)

bench-accept: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)bash bench/accept.sh

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
