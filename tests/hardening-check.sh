#!/bin/sh
# hardening-check.sh BINARY FORTIFY(ON|OFF) -- the build-hardening properties
# Debian's hardening-check reports, read with readelf (binutils): a PIE, full
# RELRO (GNU_RELRO + BIND_NOW), the stack protector, and with FORTIFY=ON the
# glibc *_chk functions _FORTIFY_SOURCE=2 substitutes. Prints one line per
# property; exits 1 when any is missing.
set -eu
bin=$1
fortify=${2:-OFF}
fail=0
hdr=$(readelf -W -h "$bin")
dyn=$(readelf -W -d "$bin")
seg=$(readelf -W -l "$bin")
syms=$(readelf -W --dyn-syms "$bin")

check() {   # check NAME CONDITION-EXIT-STATUS
    if [ "$2" = 0 ]; then echo "ok: $1"; else echo "MISSING: $1"; fail=1; fi
}
has() {     # has TEXT PATTERN
    case $1 in *$2*) return 0 ;; *) return 1 ;; esac
}

r=1; has "$hdr" "DYN (" && has "$dyn" "PIE" && r=0; check "position-independent executable" $r
r=1; has "$seg" "GNU_RELRO" && r=0; check "read-only relocations (RELRO)" $r
r=1; has "$dyn" "BIND_NOW" && r=0; check "immediate binding (BIND_NOW)" $r
r=1; has "$syms" "__stack_chk_fail" && r=0; check "stack protector" $r
if [ "$fortify" = ON ]; then
    r=1; has "$syms" "_chk@GLIBC" && r=0
    check "_FORTIFY_SOURCE (*_chk functions)" $r
fi
exit $fail
