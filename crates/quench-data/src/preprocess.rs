//! Image preprocessing for image-folder datasets: decode, resize, scale,
//! normalise, lay out. Written as `key=value` pairs, e.g.
//! `resize=224x224,channels=rgb,layout=nchw,scale=0.00392157,mean=0.485/0.456/0.406,std=0.229/0.224/0.225`.

use crate::DataError;
use quench_ir::Tensor;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Nchw,
    Nhwc,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channels {
    Rgb,
    Bgr,
    Gray,
}

/// How a decoded image becomes a float tensor: `((pixel * scale) - mean[c]) / std[c]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Preprocess {
    pub resize: Option<(u32, u32)>,
    pub layout: Layout,
    pub channels: Channels,
    pub scale: f32,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Default for Preprocess {
    fn default() -> Preprocess {
        Preprocess {
            resize: None,
            layout: Layout::Nchw,
            channels: Channels::Rgb,
            scale: 1.0 / 255.0,
            mean: vec![0.0],
            std: vec![1.0],
        }
    }
}

fn parse_floats(key: &str, v: &str) -> Result<Vec<f32>, String> {
    v.split('/').map(|x| parse_float(key, x)).collect()
}

fn parse_float(key: &str, v: &str) -> Result<f32, String> {
    let v = v.trim();
    let parsed = match v.split_once('/') {
        Some((a, b)) => a
            .trim()
            .parse::<f32>()
            .ok()
            .zip(b.trim().parse::<f32>().ok())
            .map(|(a, b)| a / b),
        None => v.parse::<f32>().ok(),
    };
    parsed
        .filter(|x| x.is_finite())
        .ok_or_else(|| format!("{key}: '{v}' is not a number"))
}

impl Preprocess {
    /// Parses the `key=value,...` recipe; unknown keys are errors.
    pub fn parse(spec: &str) -> Result<Preprocess, String> {
        let mut p = Preprocess::default();
        for part in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("'{part}': expected key=value"))?;
            match k.trim() {
                "resize" => {
                    let (w, h) = v
                        .split_once('x')
                        .ok_or_else(|| format!("resize: '{v}' is not WxH"))?;
                    let dim = |s: &str| {
                        s.trim()
                            .parse::<u32>()
                            .ok()
                            .filter(|&d| d > 0 && d <= 16384)
                    };
                    p.resize = Some((
                        dim(w).ok_or("resize: bad width")?,
                        dim(h).ok_or("resize: bad height")?,
                    ));
                }
                "layout" => {
                    p.layout = match v.trim() {
                        "nchw" => Layout::Nchw,
                        "nhwc" => Layout::Nhwc,
                        o => return Err(format!("layout: '{o}' is not nchw or nhwc")),
                    }
                }
                "channels" => {
                    p.channels = match v.trim() {
                        "rgb" => Channels::Rgb,
                        "bgr" => Channels::Bgr,
                        "gray" => Channels::Gray,
                        o => return Err(format!("channels: '{o}' is not rgb, bgr or gray")),
                    }
                }
                "scale" => p.scale = parse_float("scale", v)?,
                "mean" => p.mean = parse_floats("mean", v)?,
                "std" => {
                    p.std = parse_floats("std", v)?;
                    if p.std.contains(&0.0) {
                        return Err("std: must not be 0".into());
                    }
                }
                other => {
                    return Err(format!(
                        "unknown preprocess key '{other}' (resize, layout, channels, scale, mean, std)"
                    ));
                }
            }
        }
        let c = if p.channels == Channels::Gray { 1 } else { 3 };
        for (name, v) in [("mean", &p.mean), ("std", &p.std)] {
            if v.len() != 1 && v.len() != c {
                return Err(format!("{name}: {} values for {c} channel(s)", v.len()));
            }
        }
        Ok(p)
    }

    /// Decodes and preprocesses one image into a `[C,H,W]` or `[H,W,C]` tensor.
    pub fn load(&self, path: &Path) -> Result<Tensor, DataError> {
        let what = path.display().to_string();
        let img = image::open(path)
            .map_err(|e| DataError::format(&what, format!("cannot decode image: {e}")))?;
        let img = match self.resize {
            Some((w, h)) => img.resize_exact(w, h, image::imageops::FilterType::Triangle),
            None => img,
        };
        let (w, h) = (img.width() as usize, img.height() as usize);
        let (c, pixels): (usize, Vec<u8>) = match self.channels {
            Channels::Gray => (1, img.to_luma8().into_raw()),
            Channels::Rgb => (3, img.to_rgb8().into_raw()),
            Channels::Bgr => (
                3,
                img.to_rgb8()
                    .into_raw()
                    .chunks_exact(3)
                    .flat_map(|p| [p[2], p[1], p[0]])
                    .collect(),
            ),
        };
        let pick = |v: &[f32], ch: usize| if v.len() == 1 { v[0] } else { v[ch] };
        let value = |y: usize, x: usize, ch: usize| {
            (pixels[(y * w + x) * c + ch] as f32 * self.scale - pick(&self.mean, ch))
                / pick(&self.std, ch)
        };
        let (shape, data) = match self.layout {
            Layout::Nchw => {
                let mut v = Vec::with_capacity(c * h * w);
                for ch in 0..c {
                    for y in 0..h {
                        for x in 0..w {
                            v.push(value(y, x, ch));
                        }
                    }
                }
                (vec![c, h, w], v)
            }
            Layout::Nhwc => {
                let mut v = Vec::with_capacity(c * h * w);
                for y in 0..h {
                    for x in 0..w {
                        for ch in 0..c {
                            v.push(value(y, x, ch));
                        }
                    }
                }
                (vec![h, w, c], v)
            }
        };
        Tensor::from_vec(shape, data).map_err(|e| DataError::format(&what, e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_recipes_and_names_bad_keys() {
        let p = Preprocess::parse(
            "resize=32x16,channels=bgr,scale=1/255,mean=0.5,std=0.5/0.25/0.5,layout=nhwc",
        )
        .unwrap();
        assert_eq!(p.resize, Some((32, 16)));
        assert_eq!(p.channels, Channels::Bgr);
        assert!((p.scale - 1.0 / 255.0).abs() < 1e-9);
        assert!(Preprocess::parse("size=3x3").unwrap_err().contains("size"));
        assert!(Preprocess::parse("mean=1/2/3/4").is_err());
    }

    #[test]
    fn loads_png_with_normalisation() {
        let dir = std::env::temp_dir().join(format!("quench-pre-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.png");
        let img = image::RgbImage::from_fn(2, 1, |x, _| {
            if x == 0 {
                image::Rgb([255, 0, 0])
            } else {
                image::Rgb([0, 0, 255])
            }
        });
        img.save(&path).unwrap();
        let p = Preprocess::parse("channels=bgr,scale=1/255,mean=0.5,std=0.5").unwrap();
        let t = p.load(&path).unwrap();
        assert_eq!(t.shape(), &[3, 1, 2]);
        // BGR planes: B = [0→-1, 255→1], G = [-1, -1], R = [1, -1].
        assert_eq!(
            t.as_slice::<f32>().unwrap(),
            &[-1.0, 1.0, -1.0, -1.0, 1.0, -1.0]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
