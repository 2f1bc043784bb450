//! Just enough ELF to tell a static binary from a dynamic one: a dynamically linked executable
//! names its program interpreter (the dynamic loader) in a `PT_INTERP` program header; a static
//! one (static or static-pie) has none, and runs in a FROM-scratch image.
use anyhow::{bail, Context, Result};

const PT_INTERP: u32 = 3;

fn u16_at(b: &[u8], at: usize) -> Result<u16> {
    let s = b.get(at..at + 2).context("ELF truncated")?;
    Ok(u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32> {
    let s = b.get(at..at + 4).context("ELF truncated")?;
    Ok(u32::from_le_bytes(s.try_into().expect("4 bytes")))
}

fn u64_at(b: &[u8], at: usize) -> Result<u64> {
    let s = b.get(at..at + 8).context("ELF truncated")?;
    Ok(u64::from_le_bytes(s.try_into().expect("8 bytes")))
}

/// The program interpreter a 64-bit little-endian ELF file asks for, `None` when it is static.
pub fn interpreter(elf: &[u8]) -> Result<Option<String>> {
    if elf.get(..4) != Some(b"\x7fELF") {
        bail!("not an ELF file");
    }
    // EI_CLASS 2: 64-bit; EI_DATA 1: little-endian (x86-64 and aarch64, the targets shipped).
    if elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        bail!("not a 64-bit little-endian ELF file");
    }
    let phoff = u64_at(elf, 0x20)? as usize;
    let phentsize = u16_at(elf, 0x36)? as usize;
    let phnum = u16_at(elf, 0x38)? as usize;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32_at(elf, ph)? != PT_INTERP {
            continue;
        }
        let offset = u64_at(elf, ph + 8)? as usize;
        let size = u64_at(elf, ph + 32)? as usize;
        let raw = elf
            .get(offset..offset + size)
            .context("PT_INTERP out of the file")?;
        let path = raw.split(|&b| b == 0).next().unwrap_or_default();
        return Ok(Some(String::from_utf8_lossy(path).into_owned()));
    }
    Ok(None)
}

/// The machine an ELF file is built for (`e_machine`): [`EM_X86_64`] or [`EM_AARCH64`].
pub fn machine(elf: &[u8]) -> Result<u16> {
    if elf.get(..4) != Some(b"\x7fELF") {
        bail!("not an ELF file");
    }
    u16_at(elf, 0x12)
}

pub const EM_X86_64: u16 = 62;
pub const EM_AARCH64: u16 = 183;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_dynamic_from_static() {
        // This test binary itself is linked against the host's libc.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let interp = interpreter(&me).unwrap();
        assert!(
            interp.as_deref().is_some_and(|p| p.contains("ld-linux")),
            "{interp:?}"
        );
        // The same headers with the interpreter's type changed read as static.
        let mut patched = me.clone();
        let phoff = u64_at(&me, 0x20).unwrap() as usize;
        let phentsize = u16_at(&me, 0x36).unwrap() as usize;
        for i in 0..u16_at(&me, 0x38).unwrap() as usize {
            let ph = phoff + i * phentsize;
            if u32_at(&me, ph).unwrap() == PT_INTERP {
                patched[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes());
            }
        }
        assert_eq!(interpreter(&patched).unwrap(), None);
        assert!(interpreter(b"#!/bin/sh\n").is_err());
        assert!(interpreter(&me[..0x30]).is_err());
        let host = if cfg!(target_arch = "aarch64") {
            EM_AARCH64
        } else {
            EM_X86_64
        };
        assert_eq!(machine(&me).unwrap(), host);
    }
}
