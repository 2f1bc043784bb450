//! BTF blobs for tests, written the way the kernel lays them out (`Documentation/bpf/btf.rst`):
//! the reader's unit tests, the state tracer's and the fuzz seeds build theirs here, so the
//! encoding is written once, beside the constants the reader decodes with.
use std::collections::HashMap;

use crate::bpf::btf::{
    BTF_MAGIC, KIND_ARRAY, KIND_ENUM, KIND_INT, KIND_PTR, KIND_STRUCT, KIND_TYPEDEF,
};

/// Builds one BTF blob: types get ids in the order they are added (from 1 in a base blob, after
/// the base's last in a split one); a name already in the blob or its base is not added again.
pub struct BtfBuilder {
    types: Vec<u8>,
    strings: Vec<u8>,
    /// Where this blob's strings start: 0 for a base blob, the base's string size for a split one.
    str_base: u32,
    /// Names already written, here or in the base, and their offsets.
    known: HashMap<String, u32>,
}

impl BtfBuilder {
    /// A base blob (vmlinux): its string section starts with the empty string.
    pub fn new() -> Self {
        BtfBuilder {
            types: vec![],
            strings: vec![0],
            str_base: 0,
            known: HashMap::from([(String::new(), 0)]),
        }
    }

    /// A split blob (a module's) on top of `base`, whose names it may use.
    pub fn split(base: &BtfBuilder) -> Self {
        BtfBuilder {
            types: vec![],
            strings: vec![],
            str_base: base.str_base + base.strings.len() as u32,
            known: base.known.clone(),
        }
    }

    /// The offset of `name` in the string section, added if it is not there yet.
    pub fn name(&mut self, name: &str) -> u32 {
        if let Some(&off) = self.known.get(name) {
            return off;
        }
        let off = self.str_base + self.strings.len() as u32;
        self.strings.extend_from_slice(name.as_bytes());
        self.strings.push(0);
        self.known.insert(name.to_owned(), off);
        off
    }

    fn words(&mut self, words: &[u32]) {
        for w in words {
            self.types.extend_from_slice(&w.to_le_bytes());
        }
    }

    /// An integer of `bytes` bytes.
    pub fn int(&mut self, name: &str, bytes: u32) {
        let n = self.name(name);
        self.words(&[n, KIND_INT << 24, bytes, bytes * 8]);
    }

    /// A pointer to type `to` (0: `void *`).
    pub fn ptr(&mut self, to: u32) {
        self.words(&[0, KIND_PTR << 24, to]);
    }

    /// An array of `n` elements of type `elem`, indexed by type `index`.
    pub fn array(&mut self, elem: u32, index: u32, n: u32) {
        self.words(&[0, KIND_ARRAY << 24, 0, elem, index, n]);
    }

    pub fn typedef(&mut self, name: &str, to: u32) {
        let n = self.name(name);
        self.words(&[n, KIND_TYPEDEF << 24, to]);
    }

    /// Members: (name, type, bit offset, bitfield size); "" is an anonymous member, and a
    /// non-zero bitfield size sets the struct's kind_flag.
    pub fn strukt(&mut self, name: &str, size: u32, members: &[(&str, u32, u32, u32)]) {
        let n = self.name(name);
        let kflag = members.iter().any(|m| m.3 != 0) as u32;
        self.words(&[
            n,
            kflag << 31 | KIND_STRUCT << 24 | members.len() as u32,
            size,
        ]);
        for &(m, ty, off, bits) in members {
            let mn = self.name(m);
            let off = if kflag == 1 { bits << 24 | off } else { off };
            self.words(&[mn, ty, off]);
        }
    }

    /// A 4-byte enum of (enumerator, value).
    pub fn enumeration(&mut self, name: &str, values: &[(&str, u32)]) {
        let n = self.name(name);
        self.words(&[n, KIND_ENUM << 24 | values.len() as u32, 4]);
        for &(v, value) in values {
            let vn = self.name(v);
            self.words(&[vn, value]);
        }
    }

    /// The blob: header, types, strings.
    pub fn finish(&self) -> Vec<u8> {
        let mut b = vec![];
        b.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        // Version 1, no flags.
        b.extend_from_slice(&[1, 0]);
        let (types, strings) = (self.types.len() as u32, self.strings.len() as u32);
        // Header length, then each section's offset and length after the header.
        for w in [24, 0, types, types, strings] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        b.extend_from_slice(&self.types);
        b.extend_from_slice(&self.strings);
        b
    }
}

impl Default for BtfBuilder {
    fn default() -> Self {
        Self::new()
    }
}
