//! Labelled image datasets (.npz, IDX, CSV, image folders), normalisation,
//! and a loader that shuffles, augments (random crop with padding,
//! horizontal flip) and batches on a background thread.
//!
//! Batch order and augmentation depend only on (seed, epoch, batch index),
//! so a run resumed mid-epoch sees exactly the batches it would have seen.

use crate::rng::{Rng, mix};
use crate::{Result, TrainError, invalid};
use quench_ir::{Tensor, TensorData};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};

/// Images (`n × c × h × w` f32) and their class labels.
#[derive(Clone, Debug, Default)]
pub struct Dataset {
    pub images: Vec<f32>,
    pub labels: Vec<i64>,
    pub chw: [usize; 3],
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> TrainError + '_ {
    move |e| TrainError::Io {
        path: path.display().to_string(),
        source: e,
    }
}

fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(io(path))?;
    if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(io(path))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn sample_len(&self) -> usize {
        self.chw.iter().product()
    }

    pub fn classes(&self) -> usize {
        self.labels
            .iter()
            .copied()
            .max()
            .map_or(0, |m| m as usize + 1)
    }

    /// Opens a dataset by its form: `.npz` (arrays `input`/`x` and
    /// `label`/`y`), `.csv[.gz]` (pixels then the label on each line, square
    /// grey images), IDX (`*images*` file; labels from the matching
    /// `*labels*` file), or a folder of class sub-folders of images.
    /// Pixel data (u8) is scaled to [0, 1]; float .npz data is kept as is.
    pub fn open(path: &Path) -> Result<Dataset> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        let ds = if path.is_dir() {
            Self::open_folder(path)?
        } else if name.ends_with(".npz") {
            Self::open_npz(path)?
        } else if name.ends_with(".csv") || name.ends_with(".csv.gz") {
            Self::open_csv(path)?
        } else if name.contains("images") || name.contains("idx") {
            Self::open_idx(path)?
        } else {
            invalid!(
                "{}: unknown dataset format (.npz, .csv[.gz], IDX, or a folder)",
                path.display()
            );
        };
        if ds.is_empty() {
            invalid!("{}: no samples", path.display());
        }
        if ds.images.len() != ds.len() * ds.sample_len() {
            invalid!(
                "{}: {} values for {} samples of {:?}",
                path.display(),
                ds.images.len(),
                ds.len(),
                ds.chw
            );
        }
        Ok(ds)
    }

    fn open_npz(path: &Path) -> Result<Dataset> {
        let arrays = quench_data::read_npz(path)?;
        let find = |names: &[&str]| {
            arrays
                .iter()
                .find(|(n, _)| names.contains(&n.as_str()))
                .map(|(_, t)| t)
        };
        let (Some(x), Some(y)) = (
            find(&["input", "x", "images", "data"]),
            find(&["label", "y", "labels", "target"]),
        ) else {
            invalid!(
                "{}: needs arrays 'input' (or x) and 'label' (or y)",
                path.display()
            );
        };
        let chw = match x.shape() {
            [_, c, h, w] => [*c, *h, *w],
            [_, h, w] => [1, *h, *w],
            [_, f] => [1, 1, *f],
            s => invalid!(
                "{}: input has shape {s:?}, expected N×C×H×W",
                path.display()
            ),
        };
        let images = match x.data() {
            TensorData::F32(v) => v.clone(),
            TensorData::F64(v) => v.iter().map(|&a| a as f32).collect(),
            TensorData::U8(v) => v.iter().map(|&a| a as f32 / 255.0).collect(),
            _ => invalid!(
                "{}: input dtype {:?} is not float32/float64/uint8",
                path.display(),
                x.dtype()
            ),
        };
        Ok(Dataset {
            images,
            labels: y.to_i64_vec()?,
            chw,
        })
    }

    fn open_csv(path: &Path) -> Result<Dataset> {
        let text = String::from_utf8(read_maybe_gz(path)?)
            .map_err(|_| TrainError::Invalid(format!("{}: not UTF-8 text", path.display())))?;
        let mut images = Vec::new();
        let mut labels = Vec::new();
        let mut width = None;
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let vals: Vec<f32> = match line.split(',').map(|v| v.trim().parse::<f32>()).collect() {
                Ok(v) => v,
                Err(_) if i == 0 => continue, // a header
                Err(_) => invalid!("{}: line {} is not numbers", path.display(), i + 1),
            };
            let Some((&label, px)) = vals.split_last() else {
                continue;
            };
            if *width.get_or_insert(px.len()) != px.len() {
                invalid!(
                    "{}: line {} has {} values, earlier lines {}",
                    path.display(),
                    i + 1,
                    px.len(),
                    width.unwrap_or(0)
                );
            }
            images.extend_from_slice(px);
            labels.push(label as i64);
        }
        let w = width.unwrap_or(0);
        let side = (w as f64).sqrt() as usize;
        let chw = if side * side == w {
            [1, side, side]
        } else {
            [1, 1, w]
        };
        // 8x8 digits use 0..16, MNIST 0..255.
        let max = images.iter().copied().fold(0.0f32, f32::max);
        let scale = if max <= 16.0 { 16.0 } else { 255.0 };
        images.iter_mut().for_each(|v| *v /= scale);
        Ok(Dataset {
            images,
            labels,
            chw,
        })
    }

    fn open_idx(path: &Path) -> Result<Dataset> {
        let parse = |p: &Path| -> Result<(Vec<usize>, Vec<u8>)> {
            let b = read_maybe_gz(p)?;
            if b.len() < 4 || b[0] != 0 || b[1] != 0 || b[2] != 8 {
                invalid!("{}: not an unsigned-byte IDX file", p.display());
            }
            let r = b[3] as usize;
            let mut dims = Vec::new();
            for i in 0..r {
                let Some(d) = b.get(4 + 4 * i..8 + 4 * i) else {
                    invalid!("{}: truncated header", p.display());
                };
                dims.push(u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize);
            }
            let data = b[4 + 4 * r..].to_vec();
            if data.len() != dims.iter().product::<usize>() {
                invalid!(
                    "{}: {} bytes of data for dims {dims:?}",
                    p.display(),
                    data.len()
                );
            }
            Ok((dims, data))
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let lpath = path.with_file_name(name.replace("images", "labels").replace("idx3", "idx1"));
        let (dims, px) = parse(path)?;
        let (_, lab) = parse(&lpath)?;
        let chw = match dims.as_slice() {
            [_, h, w] => [1, *h, *w],
            [_, c, h, w] => [*c, *h, *w],
            d => invalid!("{}: dims {d:?} are not images", path.display()),
        };
        Ok(Dataset {
            images: px.iter().map(|&v| v as f32 / 255.0).collect(),
            labels: lab.iter().map(|&v| v as i64).collect(),
            chw,
        })
    }

    fn open_folder(path: &Path) -> Result<Dataset> {
        let mut classes: Vec<_> = std::fs::read_dir(path)
            .map_err(io(path))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        classes.sort();
        let mut ds = Dataset::default();
        let mut grey = None;
        for (k, dir) in classes.iter().enumerate() {
            let mut files: Vec<_> = std::fs::read_dir(dir)
                .map_err(io(dir))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            files.sort();
            for f in files {
                let img = image::open(&f)
                    .map_err(|e| TrainError::Invalid(format!("{}: {e}", f.display())))?;
                let g = *grey.get_or_insert(img.color().channel_count() < 3);
                let (w, h) = (img.width() as usize, img.height() as usize);
                let chw = [if g { 1 } else { 3 }, h, w];
                if !ds.is_empty() && chw != ds.chw {
                    invalid!(
                        "{}: image size {:?} differs from {:?}",
                        f.display(),
                        chw,
                        ds.chw
                    );
                }
                ds.chw = chw;
                if g {
                    ds.images
                        .extend(img.to_luma8().pixels().map(|p| p.0[0] as f32 / 255.0));
                } else {
                    let rgb = img.to_rgb8();
                    for c in 0..3 {
                        ds.images
                            .extend(rgb.pixels().map(|p| p.0[c] as f32 / 255.0));
                    }
                }
                ds.labels.push(k as i64);
            }
        }
        Ok(ds)
    }

    fn take(&self, rows: &[usize]) -> Dataset {
        let s = self.sample_len();
        let mut d = Dataset {
            chw: self.chw,
            ..Default::default()
        };
        for &r in rows {
            d.images.extend_from_slice(&self.images[r * s..(r + 1) * s]);
            d.labels.push(self.labels[r]);
        }
        d
    }

    /// Splits off the last `per_class` samples of each class (in file order)
    /// as a held-out set: (train, held out).
    pub fn split_per_class(&self, per_class: usize) -> (Dataset, Dataset) {
        let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); self.classes()];
        for (i, &l) in self.labels.iter().enumerate() {
            if l >= 0 {
                by_class[l as usize].push(i);
            }
        }
        let (mut train, mut held) = (Vec::new(), Vec::new());
        for rows in by_class {
            let cut = rows.len().saturating_sub(per_class);
            train.extend_from_slice(&rows[..cut]);
            held.extend_from_slice(&rows[cut..]);
        }
        train.sort_unstable();
        held.sort_unstable();
        (self.take(&train), self.take(&held))
    }

    /// Per-channel mean and standard deviation.
    pub fn stats(&self) -> (Vec<f32>, Vec<f32>) {
        let [c, h, w] = self.chw;
        let s = h * w;
        let (mut m, mut sd) = (vec![0.0; c], vec![0.0; c]);
        for ch in 0..c {
            let vals = || {
                (0..self.len())
                    .flat_map(move |n| self.images[(n * c + ch) * s..(n * c + ch + 1) * s].iter())
            };
            let cnt = (self.len() * s).max(1) as f64;
            let mean = vals().map(|&v| v as f64).sum::<f64>() / cnt;
            let var = vals().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / cnt;
            m[ch] = mean as f32;
            sd[ch] = var.sqrt().max(1e-6) as f32;
        }
        (m, sd)
    }

    /// `x = (x - mean[c]) / std[c]`.
    pub fn normalize(&mut self, mean: &[f32], std: &[f32]) -> Result<()> {
        let [c, h, w] = self.chw;
        if mean.len() != c || std.len() != c {
            invalid!(
                "normalisation has {} means / {} stds for {c} channels",
                mean.len(),
                std.len()
            );
        }
        for (i, v) in self.images.iter_mut().enumerate() {
            let ch = (i / (h * w)) % c;
            *v = (*v - mean[ch]) / std[ch];
        }
        Ok(())
    }

    /// Pads every image, centred, to `size × size` with `fill` per channel.
    pub fn pad_to(&mut self, size: usize, fill: &[f32]) -> Result<()> {
        let [c, h, w] = self.chw;
        if size < h || size < w {
            invalid!("cannot pad {h}x{w} images to {size}x{size}");
        }
        let (top, left) = ((size - h) / 2, (size - w) / 2);
        let mut out = Vec::with_capacity(self.len() * c * size * size);
        for n in 0..self.len() {
            for ch in 0..c {
                let f = fill.get(ch).copied().unwrap_or(0.0);
                let plane = &self.images[(n * c + ch) * h * w..(n * c + ch + 1) * h * w];
                for y in 0..size {
                    for x in 0..size {
                        let inside = y >= top && y < top + h && x >= left && x < left + w;
                        out.push(if inside {
                            plane[(y - top) * w + x - left]
                        } else {
                            f
                        });
                    }
                }
            }
        }
        self.images = out;
        self.chw = [c, size, size];
        Ok(())
    }
}

/// Training-time augmentation.
#[derive(Clone, Debug, Default)]
pub struct Augment {
    /// Random crop after padding by this many pixels (0: off).
    pub crop_pad: usize,
    pub hflip: bool,
    /// Per-channel value of the padding (the normalised value of black).
    pub fill: Vec<f32>,
}

/// One batch: `x` is `n × c × h × w`.
pub struct Batch {
    pub x: Tensor,
    pub labels: Vec<i64>,
    pub index: usize,
}

/// Sample order of one epoch.
pub fn epoch_order(n: usize, seed: u64, epoch: usize, shuffle: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if shuffle {
        Rng::new(mix(seed ^ 0x5EED) ^ epoch as u64).shuffle(&mut order);
    }
    order
}

fn make_batch(
    ds: &Dataset,
    rows: &[usize],
    aug: &Augment,
    rng: &mut Rng,
    index: usize,
) -> Result<Batch> {
    let [c, h, w] = ds.chw;
    let s = c * h * w;
    let mut x = Vec::with_capacity(rows.len() * s);
    let mut labels = Vec::with_capacity(rows.len());
    for &r in rows {
        let img = &ds.images[r * s..(r + 1) * s];
        let p = aug.crop_pad as isize;
        let (dy, dx) = if p > 0 {
            (
                rng.below(2 * p as usize + 1) as isize - p,
                rng.below(2 * p as usize + 1) as isize - p,
            )
        } else {
            (0, 0)
        };
        let flip = aug.hflip && rng.uniform() < 0.5;
        if dy == 0 && dx == 0 && !flip {
            x.extend_from_slice(img);
        } else {
            for ch in 0..c {
                let f = aug.fill.get(ch).copied().unwrap_or(0.0);
                for y in 0..h as isize {
                    for xx in 0..w as isize {
                        let sx0 = if flip { w as isize - 1 - xx } else { xx };
                        let (sy, sx) = (y + dy, sx0 + dx);
                        let inside = sy >= 0 && sx >= 0 && sy < h as isize && sx < w as isize;
                        x.push(if inside {
                            img[(ch * h + sy as usize) * w + sx as usize]
                        } else {
                            f
                        });
                    }
                }
            }
        }
        labels.push(ds.labels[r]);
    }
    Ok(Batch {
        x: Tensor::from_vec(vec![rows.len(), c, h, w], x)?,
        labels,
        index,
    })
}

/// Streams the batches of one epoch, from batch `skip` on, built on a
/// background thread (a few batches ahead of the training loop).
pub fn batches(
    ds: Arc<Dataset>,
    batch: usize,
    seed: u64,
    epoch: usize,
    skip: usize,
    shuffle: bool,
    aug: Augment,
) -> Receiver<Result<Batch>> {
    let (tx, rx) = sync_channel(4);
    std::thread::spawn(move || {
        let order = epoch_order(ds.len(), seed, epoch, shuffle);
        for (i, rows) in order.chunks(batch.max(1)).enumerate().skip(skip) {
            let mut rng = Rng::new(mix(seed ^ ((epoch as u64) << 32) ^ i as u64));
            if tx.send(make_batch(&ds, rows, &aug, &mut rng, i)).is_err() {
                return;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Dataset {
        Dataset {
            images: (0..6 * 4).map(|v| v as f32).collect(),
            labels: vec![0, 0, 0, 1, 1, 1],
            chw: [1, 2, 2],
        }
    }

    #[test]
    fn split_per_class_holds_out_the_last_rows_of_each_class() {
        let (tr, te) = tiny().split_per_class(1);
        assert_eq!(tr.labels, vec![0, 0, 1, 1]);
        assert_eq!(te.labels, vec![0, 1]);
        assert_eq!(&te.images[..4], &[8.0, 9.0, 10.0, 11.0]);
    }

    #[test]
    fn batches_are_deterministic_and_resumable() {
        let ds = Arc::new(tiny());
        let aug = Augment {
            crop_pad: 1,
            hflip: true,
            fill: vec![-1.0],
        };
        let all: Vec<_> = batches(ds.clone(), 4, 3, 2, 0, true, aug.clone())
            .iter()
            .map(|b| b.unwrap())
            .collect();
        let again: Vec<_> = batches(ds, 4, 3, 2, 1, true, aug)
            .iter()
            .map(|b| b.unwrap())
            .collect();
        assert_eq!(all.len(), 2);
        assert_eq!(again.len(), 1);
        assert_eq!(all[1].x, again[0].x);
        assert_eq!(all[1].labels, again[0].labels);
    }

    #[test]
    fn csv_and_npz_load_and_bad_files_fail() {
        let dir = std::env::temp_dir().join(format!("qt-data-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let csv = dir.join("d.csv");
        std::fs::write(&csv, "0,255,0,255,1\n255,0,255,0,0\n").unwrap();
        let d = Dataset::open(&csv).unwrap();
        assert_eq!(d.chw, [1, 2, 2]);
        assert_eq!(d.labels, vec![1, 0]);
        assert_eq!(d.images[1], 1.0);
        std::fs::write(&csv, "0,1,2\n1,2\n").unwrap();
        assert!(Dataset::open(&csv).is_err());
        assert!(Dataset::open(&dir.join("nope.bin")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
