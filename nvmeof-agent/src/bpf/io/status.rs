//! NVMe status codes → `status` label values. The kernel keeps a completion's status as status
//! code type (bits 8..11) and status code (bits 0..8); the names follow `include/linux/nvme.h`
//! (`NVME_SC_*`, lower case). Codes without a name show as hex, e.g. `0x1c4`.
use std::borrow::Cow;

use nvmeof_common::OpClass;

/// The label value of an error status. Fabrics commands (connect, property get/set) reuse the
/// command-specific range 0x180.. with their own meanings, hence the class.
pub fn status_label(status: u16, class: OpClass) -> Cow<'static, str> {
    let fabrics = match (class, status) {
        (OpClass::Fabrics, 0x180) => Some("connect_format"),
        (OpClass::Fabrics, 0x181) => Some("connect_ctrl_busy"),
        (OpClass::Fabrics, 0x182) => Some("connect_invalid_param"),
        (OpClass::Fabrics, 0x183) => Some("connect_restart_disc"),
        (OpClass::Fabrics, 0x184) => Some("connect_invalid_host"),
        _ => None,
    };
    match fabrics.or_else(|| status_name(status)) {
        Some(name) => Cow::Borrowed(name),
        None => Cow::Owned(format!("{status:#x}")),
    }
}

fn status_name(status: u16) -> Option<&'static str> {
    Some(match status {
        // Generic command status.
        0x000 => "success",
        0x001 => "invalid_opcode",
        0x002 => "invalid_field",
        0x003 => "cmdid_conflict",
        0x004 => "data_xfer_error",
        0x005 => "power_loss",
        0x006 => "internal",
        0x007 => "abort_req",
        0x008 => "abort_queue",
        0x009 => "fused_fail",
        0x00a => "fused_missing",
        0x00b => "invalid_ns",
        0x00c => "cmd_seq_error",
        0x00d => "sgl_invalid_last",
        0x00e => "sgl_invalid_count",
        0x00f => "sgl_invalid_data",
        0x010 => "sgl_invalid_metadata",
        0x011 => "sgl_invalid_type",
        0x012 => "cmb_invalid_use",
        0x013 => "prp_invalid_offset",
        0x014 => "atomic_wu_exceeded",
        0x015 => "op_denied",
        0x016 => "sgl_invalid_offset",
        0x018 => "host_id_inconsist",
        0x019 => "keep_alive_expired",
        0x01a => "keep_alive_invalid",
        0x01b => "abort_preempt",
        0x01c => "sanitize_failed",
        0x01d => "sanitize_in_progress",
        0x01e => "sgl_invalid_granularity",
        0x01f => "cmd_not_sup_cmb_queue",
        0x020 => "ns_write_protected",
        0x021 => "cmd_interrupted",
        0x022 => "transient_tr_err",
        0x024 => "invalid_io_cmd_set",
        0x080 => "lba_range",
        0x081 => "cap_exceeded",
        0x082 => "ns_not_ready",
        0x083 => "reservation_conflict",
        0x084 => "format_in_progress",
        // Command specific status.
        0x100 => "cq_invalid",
        0x101 => "qid_invalid",
        0x102 => "queue_size",
        0x103 => "abort_limit",
        0x105 => "async_limit",
        0x106 => "firmware_slot",
        0x107 => "firmware_image",
        0x108 => "invalid_vector",
        0x109 => "invalid_log_page",
        0x10a => "invalid_format",
        0x10b => "fw_needs_conv_reset",
        0x10c => "invalid_queue",
        0x10d => "feature_not_saveable",
        0x10e => "feature_not_changeable",
        0x10f => "feature_not_per_ns",
        0x110 => "fw_needs_subsys_reset",
        0x111 => "fw_needs_reset",
        0x112 => "fw_needs_max_time",
        0x113 => "fw_activation_prohibited",
        0x114 => "overlapping_range",
        0x115 => "ns_insufficient_cap",
        0x116 => "ns_id_unavailable",
        0x118 => "ns_already_attached",
        0x119 => "ns_is_private",
        0x11a => "ns_not_attached",
        0x11b => "thin_prov_not_supp",
        0x11c => "ctrl_list_invalid",
        0x11d => "self_test_in_progress",
        0x11e => "bp_write_prohibited",
        0x11f => "ctrl_id_invalid",
        0x120 => "sec_ctrl_state_invalid",
        0x121 => "ctrl_res_num_invalid",
        0x122 => "res_id_invalid",
        0x123 => "pmr_san_prohibited",
        0x124 => "ana_group_id_invalid",
        0x125 => "ana_attach_failed",
        // I/O command set specific.
        0x180 => "bad_attributes",
        0x181 => "invalid_pi",
        0x182 => "read_only",
        0x190 => "discovery_restart",
        0x191 => "auth_required",
        0x1b8 => "zone_boundary_error",
        0x1b9 => "zone_full",
        0x1ba => "zone_read_only",
        0x1bb => "zone_offline",
        0x1bc => "zone_invalid_write",
        0x1bd => "zone_too_many_active",
        0x1be => "zone_too_many_open",
        0x1bf => "zone_invalid_transition",
        // Media and data integrity errors.
        0x280 => "write_fault",
        0x281 => "read_error",
        0x282 => "guard_check",
        0x283 => "apptag_check",
        0x284 => "reftag_check",
        0x285 => "compare_failed",
        0x286 => "access_denied",
        0x287 => "unwritten_block",
        // Path-related errors; the last two are set by the host itself (transport down, command
        // cancelled on reset), not by the controller.
        0x300 => "internal_path_error",
        0x301 => "ana_persistent_loss",
        0x302 => "ana_inaccessible",
        0x303 => "ana_transition",
        0x360 => "ctrl_path_error",
        0x370 => "host_path_error",
        0x371 => "host_aborted_cmd",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(status_label(0x281, OpClass::Read), "read_error");
        assert_eq!(status_label(0x371, OpClass::Write), "host_aborted_cmd");
        assert_eq!(status_label(0x303, OpClass::Read), "ana_transition");
        assert_eq!(status_label(0x182, OpClass::Write), "read_only");
        assert_eq!(
            status_label(0x182, OpClass::Fabrics),
            "connect_invalid_param"
        );
        assert_eq!(status_label(0x1c4, OpClass::Read), "0x1c4");
        assert_eq!(status_label(0x7ff, OpClass::Admin), "0x7ff");
    }
}
