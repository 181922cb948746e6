//! The metrics store on disk: one file of fixed-size regions, one region per series, each
//! holding a day of 10 s samples and a month of 5 min averages in two rings. Its size is set by
//! the number of series (capped), never by time, and a write is a few bytes in place. Written
//! here because the time-series crates are databases of their own (a WAL, compaction, their
//! own threads) for what fits in two arrays per series.
//!
//! A region: `[fine_last: i64][coarse_last: i64][fine: FINE_SLOTS × f32][coarse: COARSE_SLOTS
//! × f32]`, little-endian; `*_last` is the newest slot written (Unix seconds / step), an empty
//! slot is NaN. Moving past slots that got no sample fills them with NaN, so a slot read back
//! always belongs to the lap asked for. The 5 min value is the mean of its 10 s samples,
//! written again with each of them, so a restart loses nothing. Which region holds which
//! series is in `series.json`, written (atomically) when a series is added or removed.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub const FINE_STEP: i64 = protocol::metrics::SAMPLE_SECS as i64;
pub const FINE_SLOTS: i64 = 24 * 3600 / FINE_STEP;
pub const COARSE_STEP: i64 = 300;
pub const COARSE_SLOTS: i64 = 30 * 24 * 3600 / COARSE_STEP;
const HEADER: u64 = 16;
const REGION: u64 = HEADER + 4 * (FINE_SLOTS + COARSE_SLOTS) as u64;
/// Fine samples per coarse slot.
const PER_COARSE: i64 = COARSE_STEP / FINE_STEP;

/// A series: a metric and its labels (`app`, `env`, `node`, `process`...).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct SeriesKey {
    pub metric: String,
    pub labels: BTreeMap<String, String>,
}

impl SeriesKey {
    pub fn new(metric: &str, labels: &[(&str, &str)]) -> Self {
        let labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Self { metric: metric.to_string(), labels }
    }

    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Index {
    /// Region number of each series.
    series: Vec<(SeriesKey, u32)>,
}

pub struct Rings {
    file: File,
    index_path: PathBuf,
    regions: HashMap<SeriesKey, u32>,
    /// Regions given back by removed series, to be used again.
    free: Vec<u32>,
    next_region: u32,
    max_series: usize,
    /// Samples refused because the cap was reached (since start), to say so once.
    pub refused: u64,
}

/// Points read back: (Unix seconds, value), oldest first, and their step.
pub struct Points {
    pub step: i64,
    pub points: Vec<(i64, f64)>,
}

impl Rings {
    /// Opens (or creates) the store in `dir`, holding at most `max_series` series.
    pub fn open(dir: &Path, max_series: usize) -> anyhow::Result<Self> {
        use anyhow::Context;
        protocol::files::private_dir(dir)?;
        let path = dir.join("rings.bin");
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true);
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&path).with_context(|| format!("opening {}", path.display()))?;
        let index_path = dir.join("series.json");
        let index: Index = match std::fs::read(&index_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "the metrics index {} is unreadable; move the directory away to start over",
                    index_path.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Index::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", index_path.display())),
        };
        let regions: HashMap<SeriesKey, u32> = index.series.into_iter().collect();
        let next_region = regions.values().map(|r| r + 1).max().unwrap_or(0);
        let used: std::collections::HashSet<u32> = regions.values().copied().collect();
        let free = (0..next_region).filter(|r| !used.contains(r)).collect();
        Ok(Self { file, index_path, regions, free, next_region, max_series, refused: 0 })
    }

    pub fn len(&self) -> usize {
        self.regions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    pub fn keys(&self) -> impl Iterator<Item = &SeriesKey> {
        self.regions.keys()
    }

    fn save_index(&self) -> anyhow::Result<()> {
        let mut series: Vec<(SeriesKey, u32)> = self.regions.iter().map(|(k, r)| (k.clone(), *r)).collect();
        series.sort();
        protocol::files::write_private(&self.index_path, &serde_json::to_vec(&Index { series })?)?;
        Ok(())
    }

    /// Records `value` of `key` at `at` (Unix seconds). A new series past the cap is refused
    /// (counted in [`Rings::refused`]).
    pub fn write(&mut self, key: &SeriesKey, at: i64, value: f64) -> anyhow::Result<()> {
        let region = match self.regions.get(key) {
            Some(r) => *r,
            None => {
                if self.regions.len() >= self.max_series {
                    self.refused += 1;
                    return Ok(());
                }
                let r = self.free.pop().unwrap_or_else(|| {
                    self.next_region += 1;
                    self.next_region - 1
                });
                self.clear(r)?;
                self.regions.insert(key.clone(), r);
                self.save_index()?;
                r
            }
        };
        let base = u64::from(region) * REGION;
        let mut header = [0u8; HEADER as usize];
        self.file.read_exact_at(&mut header, base)?;
        let fine_last = i64::from_le_bytes(header[..8].try_into().expect("8 bytes"));
        let coarse_last = i64::from_le_bytes(header[8..].try_into().expect("8 bytes"));
        let slot = at.div_euclid(FINE_STEP);
        if slot <= fine_last.saturating_sub(FINE_SLOTS) {
            return Ok(()); // older than the fine ring holds
        }
        let fine = base + HEADER;
        self.advance(fine, fine_last, slot, FINE_SLOTS)?;
        self.file
            .write_all_at(&(value as f32).to_le_bytes(), fine + 4 * slot.rem_euclid(FINE_SLOTS) as u64)?;
        // The coarse slot's mean of its fine samples so far (a bucket never wraps the ring:
        // FINE_SLOTS is a multiple of PER_COARSE).
        let coarse_slot = slot.div_euclid(PER_COARSE);
        let first = coarse_slot * PER_COARSE;
        let newest = slot.max(fine_last);
        let upto = newest.min(first + PER_COARSE - 1);
        let mut bucket = vec![0u8; 4 * (upto - first + 1) as usize];
        self.file.read_exact_at(&mut bucket, fine + 4 * first.rem_euclid(FINE_SLOTS) as u64)?;
        let mut mean = (0.0f64, 0u32);
        for (i, v) in bucket.chunks_exact(4).enumerate() {
            let v = f32::from_le_bytes(v.try_into().expect("4 bytes"));
            if !v.is_nan() && first + i as i64 > newest - FINE_SLOTS {
                mean = (mean.0 + f64::from(v), mean.1 + 1);
            }
        }
        let coarse = fine + 4 * FINE_SLOTS as u64;
        if coarse_slot > coarse_last.saturating_sub(COARSE_SLOTS) {
            self.advance(coarse, coarse_last, coarse_slot, COARSE_SLOTS)?;
            let avg = (mean.0 / f64::from(mean.1.max(1))) as f32;
            self.file
                .write_all_at(&avg.to_le_bytes(), coarse + 4 * coarse_slot.rem_euclid(COARSE_SLOTS) as u64)?;
        }
        header[..8].copy_from_slice(&fine_last.max(slot).to_le_bytes());
        header[8..].copy_from_slice(&coarse_last.max(coarse_slot).to_le_bytes());
        self.file.write_all_at(&header, base)?;
        Ok(())
    }

    /// Fills the slots between `last` (exclusive) and `slot` (exclusive) of the ring at
    /// `ring` with NaN: they got no sample in this lap.
    fn advance(&self, ring: u64, last: i64, slot: i64, slots: i64) -> std::io::Result<()> {
        if slot <= last + 1 {
            return Ok(());
        }
        let from = (last + 1).max(slot - slots);
        let nan = f32::NAN.to_le_bytes();
        let mut run = Vec::new();
        let mut start = from;
        for s in from..slot {
            if s.rem_euclid(slots) == 0 && !run.is_empty() {
                self.file.write_all_at(&run, ring + 4 * start.rem_euclid(slots) as u64)?;
                run.clear();
                start = s;
            }
            run.extend_from_slice(&nan);
        }
        if !run.is_empty() {
            self.file.write_all_at(&run, ring + 4 * start.rem_euclid(slots) as u64)?;
        }
        Ok(())
    }

    /// A new region: no slot written.
    fn clear(&self, region: u32) -> std::io::Result<()> {
        let base = u64::from(region) * REGION;
        let mut bytes = Vec::with_capacity(REGION as usize);
        bytes.extend_from_slice(&i64::MIN.to_le_bytes());
        bytes.extend_from_slice(&i64::MIN.to_le_bytes());
        for _ in 0..FINE_SLOTS + COARSE_SLOTS {
            bytes.extend_from_slice(&f32::NAN.to_le_bytes());
        }
        self.file.write_all_at(&bytes, base)
    }

    /// The points of `key` from `from` to `to` (Unix seconds): 10 s samples when `from` is
    /// within the fine ring's day of `now`, else 5 min means.
    pub fn read(&self, key: &SeriesKey, from: i64, to: i64, now: i64) -> std::io::Result<Points> {
        let Some(region) = self.regions.get(key) else {
            return Ok(Points { step: FINE_STEP, points: Vec::new() });
        };
        let base = u64::from(*region) * REGION;
        let mut header = [0u8; HEADER as usize];
        self.file.read_exact_at(&mut header, base)?;
        let fine = now - from <= FINE_STEP * FINE_SLOTS;
        let (ring, last, step, slots) = if fine {
            (
                base + HEADER,
                i64::from_le_bytes(header[..8].try_into().expect("8 bytes")),
                FINE_STEP,
                FINE_SLOTS,
            )
        } else {
            let coarse = base + HEADER + 4 * FINE_SLOTS as u64;
            (coarse, i64::from_le_bytes(header[8..].try_into().expect("8 bytes")), COARSE_STEP, COARSE_SLOTS)
        };
        let first = from.div_euclid(step).max(last.saturating_sub(slots - 1));
        let end = to.div_euclid(step).min(last);
        let mut points = Vec::new();
        if last == i64::MIN || first > end {
            return Ok(Points { step, points });
        }
        // At most two reads: up to the ring's end, then from its start.
        let mut s = first;
        while s <= end {
            let at = s.rem_euclid(slots);
            let n = (end - s + 1).min(slots - at);
            let mut buf = vec![0u8; 4 * n as usize];
            self.file.read_exact_at(&mut buf, ring + 4 * at as u64)?;
            for (i, v) in buf.chunks_exact(4).enumerate() {
                let v = f32::from_le_bytes(v.try_into().expect("4 bytes"));
                if !v.is_nan() {
                    points.push(((s + i as i64) * step, f64::from(v)));
                }
            }
            s += n;
        }
        Ok(Points { step, points })
    }

    /// Removes the series `keep` refuses; their regions are used again.
    pub fn retain(&mut self, keep: impl Fn(&SeriesKey) -> bool) -> anyhow::Result<usize> {
        let before = self.regions.len();
        let mut freed = Vec::new();
        self.regions.retain(|k, r| {
            let kept = keep(k);
            if !kept {
                freed.push(*r);
            }
            kept
        });
        if freed.is_empty() {
            return Ok(0);
        }
        self.free.extend(freed);
        self.save_index()?;
        Ok(before - self.regions.len())
    }

    /// The newest fine slot written of `key`, as Unix seconds.
    pub fn last_written(&self, key: &SeriesKey) -> std::io::Result<Option<i64>> {
        let Some(region) = self.regions.get(key) else { return Ok(None) };
        let mut last = [0u8; 8];
        self.file.read_exact_at(&mut last, u64::from(*region) * REGION)?;
        let last = i64::from_le_bytes(last);
        Ok((last != i64::MIN).then_some(last * FINE_STEP))
    }

    /// Bytes a series takes on disk.
    pub const fn bytes_per_series() -> u64 {
        REGION
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(m: &str) -> SeriesKey {
        SeriesKey::new(m, &[("app", "shop"), ("env", "production")])
    }

    #[test]
    fn samples_read_back_in_order_with_gaps_left_out_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = 1_800_000_000 - 1_800_000_000 % COARSE_STEP;
        {
            let mut rings = Rings::open(dir.path(), 10).unwrap();
            for (i, v) in [(0, 0.0), (1, 1.0), (2, 2.0), (4, 4.0), (5, 8.0)] {
                rings.write(&key("cpu"), t0 + i * FINE_STEP, v).unwrap();
            }
        }
        let rings = Rings::open(dir.path(), 10).unwrap();
        let now = t0 + 60;
        let p = rings.read(&key("cpu"), t0, now, now).unwrap();
        assert_eq!(p.step, FINE_STEP);
        let want: Vec<(i64, f64)> = [(0, 0.0), (1, 1.0), (2, 2.0), (4, 4.0), (5, 8.0)]
            .iter()
            .map(|&(i, v)| (t0 + i * FINE_STEP, v))
            .collect();
        assert_eq!(p.points, want);
        // Older than a day: the 5 minute means.
        let p = rings.read(&key("cpu"), now - 2 * 86_400, now, now).unwrap();
        assert_eq!((p.step, p.points), (COARSE_STEP, vec![(t0, 3.0)]));
        assert!(rings.read(&key("mem"), t0, now, now).unwrap().points.is_empty());
    }

    #[test]
    fn a_lap_later_old_slots_are_gone_and_the_cap_refuses_new_series() {
        let dir = tempfile::tempdir().unwrap();
        let mut rings = Rings::open(dir.path(), 1).unwrap();
        let t0 = 1_800_000_000;
        rings.write(&key("cpu"), t0, 1.0).unwrap();
        rings.write(&key("cpu"), t0 + FINE_STEP, 2.0).unwrap();
        // A day and a bit later: the old samples' slots hold nothing of the new lap.
        let t1 = t0 + FINE_STEP * FINE_SLOTS + 5 * FINE_STEP;
        rings.write(&key("cpu"), t1, 3.0).unwrap();
        let p = rings.read(&key("cpu"), t1 - 86_000, t1, t1).unwrap();
        assert_eq!(p.points, vec![(t1.div_euclid(FINE_STEP) * FINE_STEP, 3.0)]);
        // A sample older than the ring holds is ignored.
        rings.write(&key("cpu"), t0, 9.0).unwrap();
        assert_eq!(rings.read(&key("cpu"), t1 - 86_000, t1, t1).unwrap().points.len(), 1);
        rings.write(&key("mem"), t0, 1.0).unwrap();
        assert_eq!((rings.len(), rings.refused), (1, 1));
        assert_eq!(rings.retain(|k| k.metric != "cpu").unwrap(), 1);
        rings.write(&key("mem"), t1, 1.0).unwrap();
        assert_eq!(rings.len(), 1);
        assert!(rings.read(&key("mem"), t1 - 10, t1, t1).unwrap().points.len() == 1);
    }
}
