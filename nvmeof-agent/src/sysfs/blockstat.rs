//! The block layer's `stat` file (Documentation/block/stat.rst): 11 fields before 4.18, 15 with
//! the discard fields, 17 with the flush fields from 5.5.

/// One disk's cumulative I/O statistics. Sectors are 512 bytes whatever the block size; times
/// are milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockStat {
    pub read_ios: u64,
    pub read_merges: u64,
    pub read_sectors: u64,
    pub read_ticks_ms: u64,
    pub write_ios: u64,
    pub write_merges: u64,
    pub write_sectors: u64,
    pub write_ticks_ms: u64,
    pub in_flight: u64,
    pub io_ticks_ms: u64,
    pub time_in_queue_ms: u64,
    /// Present from 4.18.
    pub discard: Option<Discard>,
    /// Present from 5.5.
    pub flush: Option<Flush>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Discard {
    pub ios: u64,
    pub merges: u64,
    pub sectors: u64,
    pub ticks_ms: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flush {
    pub ios: u64,
    pub ticks_ms: u64,
}

/// Parses a `stat` file; the error says what was wrong, for the skip list.
pub fn parse_stat(text: &str) -> Result<BlockStat, String> {
    let f: Vec<u64> = text
        .split_ascii_whitespace()
        .map(|w| {
            w.parse::<u64>()
                .map_err(|_| format!("{w:?} is not a number"))
        })
        .collect::<Result<_, _>>()?;
    if f.len() < 11 {
        return Err(format!("{} fields, at least 11 expected", f.len()));
    }
    // Later kernels may append fields: the first 17 keep their meaning.
    Ok(BlockStat {
        read_ios: f[0],
        read_merges: f[1],
        read_sectors: f[2],
        read_ticks_ms: f[3],
        write_ios: f[4],
        write_merges: f[5],
        write_sectors: f[6],
        write_ticks_ms: f[7],
        in_flight: f[8],
        io_ticks_ms: f[9],
        time_in_queue_ms: f[10],
        discard: (f.len() >= 15).then(|| Discard {
            ios: f[11],
            merges: f[12],
            sectors: f[13],
            ticks_ms: f[14],
        }),
        flush: (f.len() >= 17).then(|| Flush {
            ios: f[15],
            ticks_ms: f[16],
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eleven_fifteen_and_seventeen_fields() {
        let s11 = parse_stat("  1 2 3 4 5 6 7 8 9 10 11\n").unwrap();
        assert_eq!(
            (s11.read_ios, s11.write_sectors, s11.time_in_queue_ms),
            (1, 7, 11)
        );
        assert_eq!((s11.discard, s11.flush), (None, None));
        let s15 = parse_stat("1 2 3 4 5 6 7 8 9 10 11 12 13 14 15").unwrap();
        assert_eq!(s15.discard.unwrap().ticks_ms, 15);
        assert_eq!(s15.flush, None);
        let s17 = parse_stat("1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17").unwrap();
        assert_eq!(
            s17.flush,
            Some(Flush {
                ios: 16,
                ticks_ms: 17
            })
        );
    }

    #[test]
    fn short_empty_or_garbage_stat_is_an_error() {
        assert_eq!(
            parse_stat("").unwrap_err(),
            "0 fields, at least 11 expected"
        );
        assert!(parse_stat("1 2 3").is_err());
        assert!(parse_stat("1 2 3 4 5 6 7 8 9 10 x")
            .unwrap_err()
            .contains("\"x\""));
        assert!(parse_stat("1 2 3 4 5 6 7 8 9 10 -1").is_err());
    }
}
