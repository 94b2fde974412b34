#!/usr/bin/env bash
# One device call: probe the wgmma P V form, then the sparse attention stage (quick).
cd "$(dirname "$0")"
export PATH=/usr/local/cuda/bin:$PATH
probe=$OUT/sa_probe.log
timeout 60 .prebuilt/ic_tests --gtest_filter='SparseMlaCuda.MatchesReferenceAcrossShapes' >"$probe" 2>&1
echo "probe (P V as m64n256, one instruction) rc $?" >>"$probe"
if ! grep -q '^\[  PASSED  \] 1 test' "$probe"; then export IC_MLA_WGMMA_PV=64; fi
echo "stage runs with IC_MLA_WGMMA_PV=${IC_MLA_WGMMA_PV:-256}" >>"$probe"
command -v cuobjdump >/dev/null && echo "HGMMA in the bench binary: $(cuobjdump -sass .prebuilt/sparse_attention_bench | grep -c HGMMA)" >>"$probe"
SA_MEMCHECK_S=25 timeout 200 scripts/device-sparse-attention.sh quick
echo "stage rc $?"
