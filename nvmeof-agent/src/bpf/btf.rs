//! A small reader of the kernel's BTF (`/sys/kernel/btf/*`): struct sizes and member offsets by
//! name, which the request-keyed programs need to walk `struct request` and `struct nvme_request`
//! without compiled-in offsets.
//!
//! Both base BTF (`vmlinux`) and split BTF (a module's, e.g. `nvme_core`) are read; a split
//! blob's type ids and string offsets continue after its base's. aya-obj 0.3's `Btf` is not used:
//! it neither reads split BTF nor exposes members and their offsets outside the crate.
//!
//! Nor is btf-rs 2.0, which reads split BTF: tried underneath this API, it passed every test
//! (unit, fuzz, the lab's io, state and ANA tests on 6.1 and sid), but on a 6.18 host's 5.2 MiB
//! vmlinux it parsed in 58 ms instead of 4.5 ms (best of 30) and took 34 MiB instead of 9 MiB
//! (every string copied into one hash map, every type name into another; the agent parses
//! vmlinux up to four times at start); an 8 MiB blob of one-letter strings took it 3.1 s and
//! 423 MiB (this reader: 4 ms, 8 MiB). Its `Int` does not expose its bits, so the old bitfield
//! encoding (no kind_flag) could not be refused. It is LGPL-2.1-or-later, the one copyleft crate
//! the static binary would link, and it added 105 KB to it.
//!
//! Format: `Documentation/bpf/btf.rst` (header, type section, string section; little-endian as
//! the kernel writes it on x86-64 and arm64).
use std::path::Path;

use anyhow::{bail, ensure, Context as _};

pub(crate) const BTF_MAGIC: u16 = 0xeb9f;

pub(crate) const KIND_INT: u32 = 1;
pub(crate) const KIND_PTR: u32 = 2;
pub(crate) const KIND_ARRAY: u32 = 3;
pub(crate) const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
pub(crate) const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
pub(crate) const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// Nesting allowed when resolving a type through typedefs and modifiers, arrays, or anonymous
/// members.
const MAX_DEPTH: usize = 32;

/// One type: its common header and where its kind-specific data starts in `Btf::types`.
#[derive(Clone, Copy, Debug)]
struct Type {
    name_off: u32,
    info: u32,
    size_or_type: u32,
    data: usize,
}

impl Type {
    fn kind(&self) -> u32 {
        (self.info >> 24) & 0x1f
    }
    fn vlen(&self) -> usize {
        (self.info & 0xffff) as usize
    }
    fn kind_flag(&self) -> bool {
        self.info >> 31 == 1
    }
}

/// A parsed BTF blob, with the base it extends when it is split BTF.
pub struct Btf {
    base: Option<Box<Btf>>,
    /// Id of `types[0]`: 1 for base BTF (id 0 is `void`), the base's type count for split BTF.
    first_id: u32,
    /// Offset of `strings[0]` in the combined string space.
    first_str: u32,
    types: Vec<Type>,
    type_data: Vec<u8>,
    strings: Vec<u8>,
}

/// A struct member's place: byte offset from the start of the struct and byte size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub offset: u32,
    pub size: u32,
}

fn u16_at(b: &[u8], at: usize) -> anyhow::Result<u16> {
    let s = b.get(at..at + 2).context("BTF truncated")?;
    Ok(u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], at: usize) -> anyhow::Result<u32> {
    let s = b.get(at..at + 4).context("BTF truncated")?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

impl Btf {
    /// Parses base BTF (`/sys/kernel/btf/vmlinux`).
    pub fn parse(data: &[u8]) -> anyhow::Result<Btf> {
        Self::parse_with(data, None)
    }

    /// Parses split BTF (`/sys/kernel/btf/<module>`) on top of `base`.
    pub fn parse_split(data: &[u8], base: Btf) -> anyhow::Result<Btf> {
        Self::parse_with(data, Some(base))
    }

    /// Reads and parses `path`, on top of `base` when given.
    pub fn read(path: &Path, base: Option<Btf>) -> anyhow::Result<Btf> {
        let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse_with(&data, base).with_context(|| format!("parsing {}", path.display()))
    }

    fn parse_with(data: &[u8], base: Option<Btf>) -> anyhow::Result<Btf> {
        ensure!(
            u16_at(data, 0)? == BTF_MAGIC,
            "not BTF (bad magic; only little-endian BTF is read)"
        );
        let hdr_len = u32_at(data, 4)? as usize;
        let (type_off, type_len) = (u32_at(data, 8)? as usize, u32_at(data, 12)? as usize);
        let (str_off, str_len) = (u32_at(data, 16)? as usize, u32_at(data, 20)? as usize);
        let section = |off: usize, len: usize| {
            data.get(hdr_len + off..hdr_len + off + len)
                .context("BTF section outside the blob")
        };
        let type_data = section(type_off, type_len)?.to_vec();
        let strings = section(str_off, str_len)?.to_vec();
        let (first_id, first_str) = match &base {
            Some(b) => (b.next_id(), b.next_str()),
            None => (1, 0),
        };
        let mut types = Vec::new();
        let mut at = 0;
        while at < type_data.len() {
            let t = Type {
                name_off: u32_at(&type_data, at)?,
                info: u32_at(&type_data, at + 4)?,
                size_or_type: u32_at(&type_data, at + 8)?,
                data: at + 12,
            };
            let extra = match t.kind() {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * t.vlen(),
                KIND_ENUM | KIND_FUNC_PROTO => 8 * t.vlen(),
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
                k => bail!(
                    "unknown BTF kind {k} at type {}",
                    first_id as usize + types.len()
                ),
            };
            types.push(t);
            at = t.data + extra;
        }
        ensure!(at == type_data.len(), "BTF type section truncated");
        Ok(Btf {
            base: base.map(Box::new),
            first_id,
            first_str,
            types,
            type_data,
            strings,
        })
    }

    fn next_id(&self) -> u32 {
        self.first_id + self.types.len() as u32
    }

    fn next_str(&self) -> u32 {
        self.first_str + self.strings.len() as u32
    }

    fn data(&self) -> &[u8] {
        &self.type_data
    }

    /// The string at `off` in the combined string space.
    fn string(&self, off: u32) -> &str {
        if off < self.first_str {
            return self.base.as_ref().map_or("", |b| b.string(off));
        }
        let rest = self
            .strings
            .get((off - self.first_str) as usize..)
            .unwrap_or_default();
        let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    /// The type with `id` and the blob that holds its data.
    fn type_by_id(&self, id: u32) -> anyhow::Result<(&Btf, Type)> {
        if id < self.first_id {
            return match &self.base {
                Some(b) => b.type_by_id(id),
                None => bail!("BTF type id {id} is void or out of range"),
            };
        }
        let t = self
            .types
            .get((id - self.first_id) as usize)
            .with_context(|| format!("BTF type id {id} out of range"))?;
        Ok((self, *t))
    }

    /// The id of the struct named `name` (the first complete one: forward declarations are
    /// `FWD`, not `STRUCT`), in this blob or its base.
    fn struct_id(&self, name: &str) -> Option<u32> {
        self.types
            .iter()
            .position(|t| t.kind() == KIND_STRUCT && self.string(t.name_off) == name)
            .map(|i| self.first_id + i as u32)
            .or_else(|| self.base.as_ref().and_then(|b| b.struct_id(name)))
    }

    /// The enumerators of `enum name` (32-bit enums), as (name, value), in BTF order.
    pub fn enum_values(&self, name: &str) -> anyhow::Result<Vec<(String, i64)>> {
        let id = self
            .enum_id(name)
            .with_context(|| format!("no enum {name} in BTF"))?;
        let (owner, t) = self.type_by_id(id)?;
        let mut out = Vec::with_capacity(t.vlen());
        for i in 0..t.vlen() {
            let at = t.data + 8 * i;
            let n = owner.string(u32_at(owner.data(), at)?).to_owned();
            let v = u32_at(owner.data(), at + 4)? as i32;
            out.push((n, i64::from(v)));
        }
        Ok(out)
    }

    /// The id of `typedef name` in this blob itself, not its base: a module's tracepoint is
    /// named by a typedef in the module's split BTF (`btf_trace_<tracepoint>`).
    pub fn own_typedef_id(&self, name: &str) -> Option<u32> {
        self.types
            .iter()
            .position(|t| t.kind() == KIND_TYPEDEF && self.string(t.name_off) == name)
            .map(|i| self.first_id + i as u32)
    }

    /// The arguments of tracepoint `tp` (vmlinux's): its `btf_trace_<tp>` typedef is a pointer to
    /// a function whose first parameter is the context the kernel adds, then the tracepoint's own.
    pub fn tracepoint_args(&self, tp: &str) -> anyhow::Result<usize> {
        let name = format!("btf_trace_{tp}");
        let id = self
            .own_typedef_id(&name)
            .with_context(|| format!("BTF: no typedef {name}"))?;
        let (_, ptr) = self.type_by_id(self.resolve(id)?)?;
        let (_, proto) = self.type_by_id(ptr.size_or_type)?;
        if ptr.kind() != KIND_PTR || proto.kind() != KIND_FUNC_PROTO || proto.vlen() == 0 {
            bail!("BTF: {name} is no pointer to a function with a context argument");
        }
        Ok(proto.vlen() - 1)
    }

    fn enum_id(&self, name: &str) -> Option<u32> {
        self.types
            .iter()
            .position(|t| t.kind() == KIND_ENUM && self.string(t.name_off) == name)
            .map(|i| self.first_id + i as u32)
            .or_else(|| self.base.as_ref().and_then(|b| b.enum_id(name)))
    }

    /// The size in bytes of `struct name`.
    pub fn struct_size(&self, name: &str) -> anyhow::Result<u32> {
        let id = self
            .struct_id(name)
            .with_context(|| format!("no struct {name} in BTF"))?;
        Ok(self.type_by_id(id)?.1.size_or_type)
    }

    /// The byte offset and size of `member` in `struct name`. Members of anonymous structs and
    /// unions inside it are found too (their offsets added). A bitfield, or a member that does
    /// not start on a byte, is refused: the programs read whole bytes.
    pub fn member(&self, name: &str, member: &str) -> anyhow::Result<Member> {
        let id = self
            .struct_id(name)
            .with_context(|| format!("no struct {name} in BTF"))?;
        self.find_member(id, member, 0)?
            .with_context(|| format!("struct {name} has no member {member}"))
            .with_context(|| format!("BTF: struct {name}"))
    }

    /// The byte offset of `member` in `struct name`, which must be `size` bytes: the width a
    /// program reads there.
    pub fn member_offset(&self, name: &str, member: &str, size: u32) -> anyhow::Result<u32> {
        let got = self.member(name, member)?;
        ensure!(
            got.size == size,
            "BTF: struct {name} member {member} is {} bytes, the programs read {size}",
            got.size
        );
        Ok(got.offset)
    }

    fn find_member(&self, id: u32, member: &str, depth: usize) -> anyhow::Result<Option<Member>> {
        ensure!(depth < MAX_DEPTH, "BTF: anonymous members nested too deep");
        let (owner, t) = self.type_by_id(id)?;
        ensure!(
            matches!(t.kind(), KIND_STRUCT | KIND_UNION),
            "BTF type {id} is not a struct or union"
        );
        for i in 0..t.vlen() {
            let at = t.data + 12 * i;
            let name = owner.string(u32_at(owner.data(), at)?);
            let ty = u32_at(owner.data(), at + 4)?;
            let raw = u32_at(owner.data(), at + 8)?;
            let (bit_off, bitfield) = if t.kind_flag() {
                (raw & 0x00ff_ffff, raw >> 24)
            } else {
                (raw, 0)
            };
            if name.is_empty() {
                // An anonymous struct or union: look inside.
                let inner = self.resolve(ty)?;
                let (_, it) = self.type_by_id(inner)?;
                if matches!(it.kind(), KIND_STRUCT | KIND_UNION) {
                    if let Some(m) = self.find_member(inner, member, depth + 1)? {
                        ensure!(bit_off % 8 == 0, "anonymous member not byte aligned");
                        let offset = (bit_off / 8)
                            .checked_add(m.offset)
                            .context("member offset overflows")?;
                        return Ok(Some(Member {
                            offset,
                            size: m.size,
                        }));
                    }
                }
                continue;
            }
            if name != member {
                continue;
            }
            let size = self.size_of(ty, 0)?;
            let int_bits = self.int_bits(ty)?;
            if bitfield != 0
                || bit_off % 8 != 0
                || int_bits.is_some_and(|b| u64::from(b) != u64::from(size) * 8)
            {
                bail!("member {member} is a bitfield (bit offset {bit_off}), which is not read");
            }
            return Ok(Some(Member {
                offset: bit_off / 8,
                size,
            }));
        }
        Ok(None)
    }

    /// Follows typedefs and modifiers to the type they name.
    fn resolve(&self, mut id: u32) -> anyhow::Result<u32> {
        for _ in 0..MAX_DEPTH {
            if id == 0 {
                return Ok(0);
            }
            let (_, t) = self.type_by_id(id)?;
            match t.kind() {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_or_type
                }
                _ => return Ok(id),
            }
        }
        bail!("BTF: type {id} resolves too deep")
    }

    /// For an integer type (after typedefs), its number of bits when they are not its whole
    /// size or do not start at bit 0 (the old bitfield encoding); `None` for other types.
    fn int_bits(&self, id: u32) -> anyhow::Result<Option<u32>> {
        let id = self.resolve(id)?;
        if id == 0 {
            return Ok(None);
        }
        let (owner, t) = self.type_by_id(id)?;
        if t.kind() != KIND_INT {
            return Ok(None);
        }
        let enc = u32_at(owner.data(), t.data)?;
        let (bits, offset) = (enc & 0xff, (enc >> 16) & 0xff);
        Ok(Some(if offset != 0 { u32::MAX } else { bits }))
    }

    /// The size in bytes of a type. An array's is its element's times its length, checked: a
    /// malformed blob's array of itself, or of 2^32 ints, is an error, not a stack overflow or an
    /// overflowed multiplication.
    fn size_of(&self, id: u32, depth: usize) -> anyhow::Result<u32> {
        ensure!(depth < MAX_DEPTH, "BTF: arrays nested too deep");
        let id = self.resolve(id)?;
        ensure!(id != 0, "BTF: void has no size");
        let (owner, t) = self.type_by_id(id)?;
        Ok(match t.kind() {
            KIND_INT | KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64 | KIND_FLOAT => {
                t.size_or_type
            }
            KIND_PTR => 8,
            KIND_ARRAY => {
                let elem = u32_at(owner.data(), t.data)?;
                let n = u32_at(owner.data(), t.data + 8)?;
                self.size_of(elem, depth + 1)?
                    .checked_mul(n)
                    .with_context(|| format!("BTF: array type {id} is over 4 GiB"))?
            }
            k => bail!("BTF type {id} (kind {k}) has no size"),
        })
    }
}

/// Where the kernel keeps its BTF: `vmlinux` and one split blob per module.
pub const SYS_BTF: &str = "/sys/kernel/btf";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::io::request_btf::{host_wait_from, layout_from};
    use crate::test_support::btf::BtfBuilder;
    use nvmeof_common::RequestLayout;

    /// This machine's own vmlinux BTF (the kernel's truth, where it has one): `block_bio_queue`
    /// lost its request queue argument in 5.11, and `struct request` has its `bio`.
    #[test]
    fn this_kernels_block_bio_queue_and_request_bio() {
        let Ok(vmlinux) = Btf::read(&Path::new(SYS_BTF).join("vmlinux"), None) else {
            eprintln!("skipped: no vmlinux BTF here");
            return;
        };
        let h = host_wait_from(&vmlinux).unwrap();
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut v = release
            .split(['.', '-'])
            .map(|p| p.parse::<u32>().unwrap_or(0));
        let since_5_11 = (v.next().unwrap_or(0), v.next().unwrap_or(0)) >= (5, 11);
        assert_eq!(h.bio_arg, u32::from(!since_5_11), "{release}");
        assert_eq!(
            h.request_bio,
            vmlinux.member_offset("request", "bio", 8).unwrap()
        );
        assert!(vmlinux.tracepoint_args("no_such_tracepoint").is_err());
    }

    /// Base: 1 int, 2 u16 int, 3 struct inner { u16 status @0 }, 4 struct request {..}, 5 ptr
    /// to 4. Split: 6 struct nvme_request { ptr cmd @0, u16 status @8, anonymous inner @10 ...}.
    fn blobs() -> (Vec<u8>, Btf) {
        let mut b = BtfBuilder::new();
        b.int("int", 4);
        b.int("u16", 2);
        b.strukt("inner", 2, &[("deep", 2, 0, 0)]);
        b.strukt(
            "request",
            248,
            &[("q", 5, 0, 0), ("mq_hctx", 5, 128, 0), ("tag", 1, 256, 0)],
        );
        b.ptr(4);
        let base = b.finish();
        let base_btf = Btf::parse(&base).unwrap();
        let mut s = BtfBuilder::split(&b);
        s.strukt(
            "nvme_request",
            40,
            &[
                ("cmd", 5, 0, 0),
                ("status", 2, 64, 0),
                ("", 3, 80, 0),
                ("flags", 1, 96, 3),
            ],
        );
        (s.finish(), base_btf)
    }

    #[test]
    fn base_struct_sizes_and_members() {
        let (_, base) = blobs();
        assert_eq!(base.struct_size("request").unwrap(), 248);
        assert_eq!(
            base.member("request", "mq_hctx").unwrap(),
            Member {
                offset: 16,
                size: 8
            }
        );
        assert_eq!(
            base.member("request", "tag").unwrap(),
            Member {
                offset: 32,
                size: 4
            }
        );
        let e = format!("{:#}", base.member("request", "nope").unwrap_err());
        assert!(e.contains("struct request has no member nope"), "{e}");
        let e = format!("{:#}", base.struct_size("nvme_request").unwrap_err());
        assert!(e.contains("no struct nvme_request"), "{e}");
    }

    #[test]
    fn split_btf_continues_ids_and_strings_of_its_base() {
        let (split, base) = blobs();
        let btf = Btf::parse_split(&split, base).unwrap();
        assert_eq!(btf.first_id, 6);
        assert_eq!(btf.struct_size("nvme_request").unwrap(), 40);
        // A member whose type lives in the base.
        assert_eq!(
            btf.member("nvme_request", "status").unwrap(),
            Member { offset: 8, size: 2 }
        );
        assert_eq!(
            btf.member("nvme_request", "cmd").unwrap(),
            Member { offset: 0, size: 8 }
        );
        // Inside an anonymous member: its offset plus the inner one.
        assert_eq!(
            btf.member("nvme_request", "deep").unwrap(),
            Member {
                offset: 10,
                size: 2
            }
        );
        // Base structs are still found through the split blob.
        assert_eq!(btf.struct_size("request").unwrap(), 248);
    }

    /// The whole layout from a vmlinux-like base and an nvme_core-like split blob, with the
    /// 6.1 offsets (`status` of `nvme_request` at 26 after `result`, `genctr`, `retries`,
    /// `flags`).
    #[test]
    fn request_layout_from_base_and_module() {
        let mut b = BtfBuilder::new();
        b.int("int", 4); // 1
        b.int("u16", 2); // 2
        b.int("unsigned int", 4); // 3
        b.ptr(0); // 4: void *
        b.strukt(
            "request_queue",
            2000,
            &[("queuedata", 4, 64, 0), ("id", 1, 8 * 1256, 0)],
        ); // 5
        b.strukt("blk_mq_hw_ctx", 512, &[("queue_num", 3, 1216, 0)]); // 6
        b.strukt(
            "request",
            296,
            &[
                ("q", 4, 0, 0),
                ("mq_hctx", 4, 128, 0),
                ("tag", 1, 256, 0),
                ("__data_len", 3, 352, 0),
            ],
        ); // 7
        let base = Btf::parse(&b.finish()).unwrap();
        let mut m = BtfBuilder::split(&b);
        m.strukt("nvme_ctrl", 4000, &[("instance", 1, 8 * 1096, 0)]); // 8
        m.ptr(8); // 9
        m.strukt(
            "nvme_request",
            48,
            &[("cmd", 4, 0, 0), ("status", 2, 208, 0), ("ctrl", 9, 320, 0)],
        );
        let btf = Btf::parse_split(&m.finish(), base).unwrap();
        assert_eq!(
            layout_from(&btf).unwrap(),
            RequestLayout {
                request_size: 296,
                request_q: 0,
                request_mq_hctx: 16,
                request_data_len: 44,
                request_tag: 32,
                queue_queuedata: 8,
                queue_id: 1256,
                hctx_queue_num: 152,
                nvme_req_ctrl: 40,
                nvme_req_status: 26,
                ctrl_instance: 1096,
                valid: 1,
            }
        );
    }

    /// A module's tracepoint typedef is found in its own blob only: one of the same name in the
    /// base would be vmlinux's (nvme_core built in), which the module path must not use.
    #[test]
    fn module_tracepoint_typedefs_are_the_modules_own() {
        let mut b = BtfBuilder::new();
        b.ptr(0); // 1
        b.typedef("btf_trace_sched_switch", 1); // 2
        b.typedef("btf_trace_in_both", 1); // 3
        let base = Btf::parse(&b.finish()).unwrap();
        let mut m = BtfBuilder::split(&b);
        m.typedef("btf_trace_nvme_setup_cmd", 1); // 4
        m.typedef("btf_trace_in_both", 1); // 5
        let btf = Btf::parse_split(&m.finish(), base).unwrap();
        assert_eq!(btf.own_typedef_id("btf_trace_nvme_setup_cmd"), Some(4));
        assert_eq!(btf.own_typedef_id("btf_trace_in_both"), Some(5));
        assert_eq!(btf.own_typedef_id("btf_trace_sched_switch"), None);
    }

    #[test]
    fn bitfields_are_refused_by_name() {
        let (split, base) = blobs();
        let btf = Btf::parse_split(&split, base).unwrap();
        let e = format!("{:#}", btf.member("nvme_request", "flags").unwrap_err());
        assert!(e.contains("member flags is a bitfield"), "{e}");
    }

    /// Arrays of arrays are sized; an array of itself, or one whose size overflows, is refused.
    #[test]
    fn array_members_are_sized_and_bounded() {
        let mut b = BtfBuilder::new();
        b.int("u8", 1); // 1
        b.array(1, 1, 16); // 2: u8[16]
        b.array(2, 1, 4); // 3: u8[4][16]
        b.array(4, 1, 2); // 4: an array of itself
        b.array(1, 1, u32::MAX); // 5: u8[2^32 - 1]
        b.array(5, 1, 2); // 6: twice that
        b.strukt(
            "s",
            64,
            &[("name", 3, 0, 0), ("loop", 4, 0, 0), ("huge", 6, 0, 0)],
        );
        let btf = Btf::parse(&b.finish()).unwrap();
        assert_eq!(btf.member_offset("s", "name", 64).unwrap(), 0);
        let e = format!("{:#}", btf.member("s", "loop").unwrap_err());
        assert!(e.contains("arrays nested too deep"), "{e}");
        let e = format!("{:#}", btf.member("s", "huge").unwrap_err());
        assert!(e.contains("array type 6 is over 4 GiB"), "{e}");
    }

    #[test]
    fn garbage_is_refused() {
        assert!(Btf::parse(&[0u8; 24]).is_err());
        let (split, base) = blobs();
        assert!(Btf::parse_split(&split[..split.len() - 30], base).is_err());
    }

    /// This host's own kernel: `struct request` starts with `q`, and the members the programs
    /// need are whole pointers and integers.
    #[test]
    fn host_vmlinux_struct_request() {
        let path = Path::new("/sys/kernel/btf/vmlinux");
        if !path.exists() {
            return;
        }
        let btf = Btf::read(path, None).unwrap();
        assert_eq!(
            btf.member("request", "q").unwrap(),
            Member { offset: 0, size: 8 }
        );
        let hctx = btf.member("request", "mq_hctx").unwrap();
        assert_eq!(hctx.size, 8);
        assert!(btf.struct_size("request").unwrap() > hctx.offset);
        assert_eq!(btf.member("blk_mq_hw_ctx", "queue_num").unwrap().size, 4);
        assert_eq!(btf.member("request_queue", "queuedata").unwrap().size, 8);
        // Without nvme_core's BTF the layout names what is missing.
        if !Path::new("/sys/kernel/btf/nvme_core").exists() {
            let e = format!("{:#}", layout_from(&btf).unwrap_err());
            assert!(e.contains("no struct nvme_request"), "{e}");
        }
    }
}
