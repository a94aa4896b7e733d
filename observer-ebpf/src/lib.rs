//! Host-side placeholder: the programs live in the `observer` binary target, built for BPF.
#![no_std]
