//! `cargo xtask capture`: boots the lab with every transport connected and copies what a real
//! kernel shows into `tests/fixtures/<series>/`: the nvme tracepoints' `format` files and the
//! sysfs trees the collectors read (attribute files with their contents, symlinks as symlinks,
//! so the tree works as a `--path.sysfs` root). Unit and golden tests run on these, never on
//! hand-written trees.
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::cache;
use crate::cmd::{self, say};
use crate::kernel::Series;
use crate::lab::{base64_decode, Lab, LabOptions};

/// The guest side: builds /tmp/cap and prints it as a base64 tar.gz.
const CAPTURE_SCRIPT: &str = r#"
cap=/tmp/cap; rm -rf $cap; mkdir -p $cap/sys $cap/tracepoints
for e in /sys/kernel/tracing/events/nvme/*/; do
    n=$(basename "$e"); mkdir -p "$cap/tracepoints/$n"; cat "$e/format" > "$cap/tracepoints/$n/format"
done
copy() { # copy PATH DEPTH: attribute files and symlinks below PATH, symlinks not followed
    find "$1" -maxdepth "$2" \( -type f -o -type l \) 2>/dev/null | while read -r f; do
        # RDMA GID and P_Key tables hold a file per slot (thousands), power/ only PM knobs.
        case "$f" in */gids/*|*/gid_attrs/*|*/pkeys/*|*/power/*) continue ;; esac
        d="$cap$(dirname "$f")"; mkdir -p "$d"
        if [ -L "$f" ]; then ln -sfn "$(readlink "$f")" "$cap$f"
        else cat "$f" > "$cap$f" 2>/dev/null || rm -f "$cap$f"; fi
    done
}
for c in nvme nvme-subsystem nvme-fabrics infiniband fc_host fc_remote_ports; do
    [ -d /sys/class/$c ] || continue
    copy /sys/class/$c 1
    for l in /sys/class/$c/*; do [ -L "$l" ] && copy "$(readlink -f "$l")" 4; done
done
# RDMA GID slots in use (the zero GID marks a free one; the first 16 slots, where a netdev's
# addresses go) and their netdev and type: what ties a port to the addresses it carries.
for p in /sys/class/infiniband/*/ports/*; do
    [ -d "$p/gids" ] || continue
    q="$cap$(readlink -f "$p")"
    for n in 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do
        g=$(cat "$p/gids/$n" 2>/dev/null) || continue
        [ "$g" = 0000:0000:0000:0000:0000:0000:0000:0000 ] && continue
        mkdir -p "$q/gids" "$q/gid_attrs/ndevs" "$q/gid_attrs/types"
        echo "$g" > "$q/gids/$n"
        cat "$p/gid_attrs/ndevs/$n" > "$q/gid_attrs/ndevs/$n" 2>/dev/null
        cat "$p/gid_attrs/types/$n" > "$q/gid_attrs/types/$n" 2>/dev/null
    done
done
for b in /sys/block/nvme*; do [ -L "$b" ] && copy "$b" 0; done
copy /sys/devices/virtual/nvme-fabrics 5
copy /sys/devices/virtual/nvme-subsystem 5
for n in veth0 veth1; do [ -L /sys/class/net/$n ] && copy /sys/class/net/$n 0 && copy "$(readlink -f /sys/class/net/$n)" 2; done
uname -r > $cap/KERNEL
tar -czf /tmp/cap.tgz -C $cap . && base64 /tmp/cap.tgz
"#;

/// Writes the guest's gzipped tar `tgz` beside the lab as `name` and unpacks it into `dest`.
fn unpack(lab: &Lab, name: &str, tgz: &[u8], dest: &Path) -> Result<()> {
    let archive = lab.work_dir().join(name);
    std::fs::write(&archive, tgz)?;
    cmd::output(
        Command::new("tar")
            .arg("-xzf")
            .arg(&archive)
            .arg("-C")
            .arg(dest),
    )?;
    Ok(())
}

/// Boots the lab, builds its topology and says what it is, under `what`'s name.
fn boot_and_show_topology(opts: &LabOptions, what: &str) -> Result<Lab> {
    let mut lab = Lab::boot(opts)?;
    let topo = lab.sh("topology; controllers")?;
    say(format!(
        "{what}: topology on {}:\n{}",
        lab.kernel.release,
        topo.out.trim_end()
    ));
    Ok(lab)
}

pub fn capture(series: Series, agent: &Path) -> Result<()> {
    // Fabrics only: the golden tests are written against this tree, without the emulated PCIe
    // controller of the standard lab (`capture-smart` boots that one).
    let mut opts = LabOptions::new(series);
    opts.agent = Some(agent.to_path_buf());
    let mut lab = boot_and_show_topology(&opts, "capture")?;
    // A file at a time under TCG: minutes on a loaded host (6.12 timed out at 180 s).
    let o = lab
        .sh_timeout(CAPTURE_SCRIPT, Duration::from_secs(900))
        .context("capturing sysfs and tracepoint formats")?;
    if o.rc != 0 {
        anyhow::bail!("the capture script failed (exit {}):\n{}", o.rc, o.out);
    }
    let out = o.out;
    let tgz = base64_decode(&out)?;
    let dest = cache::workspace()
        .join("tests/fixtures")
        .join(series.name());
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::create_dir_all(&dest)?;
    unpack(&lab, "cap.tgz", &tgz, &dest).context("unpacking the capture")?;
    say(format!(
        "capture: {} → {}",
        lab.kernel.release,
        dest.display()
    ));
    Ok(())
}

/// The guest side of `capture-smart`: raw pages and nvme-cli's reading of each controller named
/// in `$CTRLS`, under a stable name. Some I/O and two failed commands first, so that the data
/// unit and command counts and the Error log are not all 0; nvme-cli's readings right after
/// ours, so that both see the same counts.
const SMART_CAPTURE_SCRIPT: &str = r#"
out=/tmp/smartcap; rm -rf $out; mkdir -p $out
cap() { # cap CTRL DEV NAME
    { dd if=/dev/urandom of="$2" bs=64k count=40 oflag=direct &&
        dd if="$2" of=/dev/null bs=64k count=24 iflag=direct; } 2>/tmp/dd.err ||
        { echo "I/O on $2 ($1) failed: $(cat /tmp/dd.err)"; return 1; }
    # Two commands that fail, so that the Error log has entries to compare where a clean run
    # leaves it all zeros: a read past the namespace's end (an I/O queue, an LBA, a namespace),
    # then an opcode no controller implements (the admin queue). nvmet logs both; QEMU none.
    /usr/bin/nvme read "$2" --start-block=4294967295 --block-count=0 --data-size=512 \
        >/dev/null 2>&1 && { echo "a read past the end of $2 succeeded"; return 1; }
    /usr/bin/nvme admin-passthru "/dev/$1" --opcode=0xff >/dev/null 2>&1 &&
        { echo "admin opcode 0xff succeeded on $1"; return 1; }
    /usr/bin/nvme_pages "/dev/$1" $out > "$out/$3.decoded.json" 2>/tmp/pages.err ||
        { echo "nvme_pages $1 failed: $(cat /tmp/pages.err)"; return 1; }
    for k in id-ctrl smart-log error-log; do mv "$out/$1.$k.bin" "$out/$3.$k.bin" || return 1; done
    # error-log stays at its default of 64 entries: more (nvmet keeps 128) are read 4 KiB per
    # command at growing Log Page Offsets, which nvmet ignores for this page, answering each
    # command from its newest entry, so entries 64 on would repeat 0 to 63 (seen on 6.1).
    for k in smart-log id-ctrl error-log; do
        /usr/bin/nvme $k "/dev/$1" -o json > "$out/$3.$k.json" 2>/tmp/cli.err ||
            { echo "nvme $k $1 failed: $(cat /tmp/cli.err)"; return 1; }
    done
    rm "$out/$3.decoded.json"
}
for w in $CTRLS; do # NAME:SUBSYSTEM[:TRSVCID], or NAME:pcie
    name=${w%%:*}; sub=${w#*:}; port=
    case "$sub" in *:*) port=${sub#*:}; sub=${sub%%:*} ;; esac
    if [ "$sub" = pcie ]; then
        c=$(pcie_ctrl) && d=$(pcie_dev) || { echo "no PCIe controller in this lab"; exit 1; }
    else
        c=$(ctrl_of "$sub" $port) && d=$(dev_of "$sub") || { echo "no $sub controller in this lab"; exit 1; }
    fi
    cap "$c" "$d" "$name" || exit 1
done
tar -czf /tmp/smartcap.tgz -C $out . && base64 /tmp/smartcap.tgz
"#;

/// Where the SMART captures live (replayed by `nvmeof-agent/tests/smart_captures.rs`).
pub fn smart_fixtures() -> std::path::PathBuf {
    cache::workspace().join("nvmeof-agent/tests/fixtures/smart/captured")
}

/// `cargo xtask capture-smart`: boots the standard lab (fabrics and QEMU's PCIe controller)
/// and saves, for the PCIe controller and one controller of each fabric (the first TCP path,
/// RDMA, FC, loop), the raw Identify, SMART and Error log pages (read by the `nvme_pages`
/// example, `pages`) with `nvme smart-log`, `id-ctrl` and `error-log -o json` taken right after,
/// as `qemu-cwN.*` and `nvmet-<series>-<transport>.*`. A fabric the kernel cannot carry (its
/// limits name the module) is left out and said so; one it should carry but did not connect
/// fails the capture.
pub fn capture_smart(series: Series, agent: &Path, pages: &Path) -> Result<()> {
    let mut opts = LabOptions::standard(series);
    opts.agent = Some(agent.to_path_buf());
    opts.extra_files
        .push((pages.to_path_buf(), "/usr/bin/nvme_pages".into()));
    let pcie = opts
        .pcie_nvme
        .clone()
        .context("the standard lab has a PCIe controller")?;
    let mut lab = boot_and_show_topology(&opts, "capture-smart")?;
    let mut ctrls = vec![
        format!("qemu-cw{}:pcie", pcie.critical_warning),
        format!("nvmet-{}-tcp:tcp:4420", series.name()),
        format!("nvmet-{}-rdma:rdma", series.name()),
    ];
    for (transport, module) in [("fc", "nvme-fcloop"), ("loop", "nvme-loop")] {
        if let Some(why) = lab.kernel.limits.iter().find(|l| l.starts_with(module)) {
            say(format!("capture-smart: no {transport} capture here: {why}"));
        } else {
            ctrls.push(format!("nvmet-{}-{transport}:{transport}", series.name()));
        }
    }
    let names: Vec<&str> = ctrls.iter().filter_map(|w| w.split(':').next()).collect();
    let names = names.join(", ");
    let script = format!("CTRLS=\"{}\"\n{SMART_CAPTURE_SCRIPT}", ctrls.join(" "));
    // Five controllers' I/O and admin commands under TCG, on a host that may be loaded: more
    // room than one command's default.
    let o = lab
        .sh_timeout(&script, Duration::from_secs(600))
        .context("capturing SMART pages in the lab")?;
    if o.rc != 0 {
        anyhow::bail!(
            "the SMART capture script failed (exit {}):\n{}",
            o.rc,
            o.out
        );
    }
    let out = o.out;
    let dest = smart_fixtures();
    std::fs::create_dir_all(&dest)?;
    unpack(&lab, "smartcap.tgz", &base64_decode(&out)?, &dest)
        .context("unpacking the SMART capture")?;
    say(format!(
        "capture-smart: {} → {} ({names})",
        lab.kernel.release,
        dest.display()
    ));
    Ok(())
}
