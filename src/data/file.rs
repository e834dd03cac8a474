//! User point sets: N x D numbers from a CSV file (comma or whitespace separated, an optional
//! header line) or a NumPy `.npy` file (little-endian float32/float64, C order, shape (N, D) or
//! (N,)); and the writers `diffuse sample` uses for its output.

use crate::error::{Error, Result};
use std::path::Path;

/// N points of dimension D, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct PointSet {
    pub dim: usize,
    pub values: Vec<f64>,
}

impl PointSet {
    /// Number of points.
    pub fn len(&self) -> usize {
        self.values.len() / self.dim
    }

    /// True when there are no points.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Per-column mean and standard deviation (population; a constant column gets std 1).
    pub fn column_moments(&self) -> (Vec<f64>, Vec<f64>) {
        let n = self.len() as f64;
        let mut mean = vec![0.0; self.dim];
        for row in self.values.chunks(self.dim) {
            for (m, v) in mean.iter_mut().zip(row) {
                *m += v / n;
            }
        }
        let mut var = vec![0.0; self.dim];
        for row in self.values.chunks(self.dim) {
            for ((s, v), m) in var.iter_mut().zip(row).zip(&mean) {
                *s += (v - m) * (v - m) / n;
            }
        }
        let std = var
            .iter()
            .map(|v| if *v > 0.0 { v.sqrt() } else { 1.0 })
            .collect();
        (mean, std)
    }

    /// `(x - mean) / std` per column.
    pub fn standardised(&self, mean: &[f64], std: &[f64]) -> PointSet {
        let values = self
            .values
            .chunks(self.dim)
            .flat_map(|row| {
                row.iter()
                    .zip(mean.iter().zip(std))
                    .map(|(v, (m, s))| (v - m) / s)
            })
            .collect();
        PointSet {
            dim: self.dim,
            values,
        }
    }
}

fn file_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::Data {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Reads a `.npy` or CSV (any other extension) point file.
pub fn load_points(path: &Path) -> Result<PointSet> {
    let bytes = std::fs::read(path).map_err(|e| file_error(path, e.to_string()))?;
    points_from_bytes(path, &bytes)
}

/// [`load_points`] on the bytes of `path` (read already); errors name `path`.
pub fn points_from_bytes(path: &Path, bytes: &[u8]) -> Result<PointSet> {
    let set = if path.extension().is_some_and(|e| e == "npy") {
        parse_npy(bytes).map_err(|r| file_error(path, r))?
    } else {
        let text = std::str::from_utf8(bytes).map_err(|_| file_error(path, "not UTF-8 text"))?;
        parse_csv(text).map_err(|r| file_error(path, r))?
    };
    if set.is_empty() {
        return Err(file_error(path, "holds no points"));
    }
    if let Some(i) = set.values.iter().position(|v| !v.is_finite()) {
        return Err(file_error(
            path,
            format!(
                "point {} has a non-finite coordinate ({})",
                i / set.dim,
                set.values[i]
            ),
        ));
    }
    Ok(set)
}

/// Parses CSV text: one point per line, fields separated by commas or whitespace; a first line
/// that is not numeric is a header.
pub fn parse_csv(text: &str) -> std::result::Result<PointSet, String> {
    let mut dim = 0;
    let mut values = Vec::new();
    for (lineno, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|f| !f.is_empty())
            .collect();
        let parsed: std::result::Result<Vec<f64>, _> =
            fields.iter().map(|f| f.parse::<f64>()).collect();
        match parsed {
            Ok(row) => {
                if dim == 0 {
                    dim = row.len();
                } else if row.len() != dim {
                    return Err(format!(
                        "line {} has {} columns, expected {dim}",
                        lineno + 1,
                        row.len()
                    ));
                }
                values.extend(row);
            }
            Err(_) if dim == 0 && values.is_empty() && lineno == 0 => continue,
            Err(e) => return Err(format!("line {}: {e}", lineno + 1)),
        }
    }
    Ok(PointSet {
        dim: dim.max(1),
        values,
    })
}

/// Parses a `.npy` buffer (format versions 1-3).
pub fn parse_npy(bytes: &[u8]) -> std::result::Result<PointSet, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a .npy file (bad magic)".into());
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        2 | 3 => return Err("truncated header length".into()),
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let header = bytes
        .get(start..start + header_len)
        .ok_or("truncated header")?;
    let header = std::str::from_utf8(header).map_err(|_| "header is not text")?;
    let field = |key: &str| -> Option<&str> {
        let i = header.find(&format!("'{key}'"))? + key.len() + 2;
        let rest = header[i..].trim_start().strip_prefix(':')?.trim_start();
        Some(rest)
    };
    let descr = field("descr").ok_or("header has no descr")?;
    let width = if descr.starts_with("'<f8'") {
        8
    } else if descr.starts_with("'<f4'") {
        4
    } else {
        return Err(format!(
            "dtype {} is not little-endian float32/float64",
            descr.split(',').next().unwrap_or(descr)
        ));
    };
    if field("fortran_order").is_some_and(|f| f.starts_with("True")) {
        return Err("Fortran-order arrays are not supported".into());
    }
    let shape = field("shape").ok_or("header has no shape")?;
    let shape = shape
        .strip_prefix('(')
        .and_then(|s| s.split_once(')'))
        .map(|(inner, _)| inner)
        .ok_or_else(|| {
            let end = shape.find([',', '}']).unwrap_or(shape.len());
            format!("shape {:?} is not a tuple like (N, D)", &shape[..end])
        })?;
    let dims: Vec<usize> = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("bad shape entry {s:?}"))
        })
        .collect::<std::result::Result<_, _>>()?;
    let (n, dim) = match dims.as_slice() {
        [n] => (*n, 1),
        [n, d] => (*n, *d),
        _ => return Err(format!("shape {dims:?} is not (N, D) or (N,)")),
    };
    // The claimed size is checked (without overflow) against the bytes present before
    // anything is allocated.
    let needed = n
        .checked_mul(dim)
        .and_then(|v| v.checked_mul(width))
        .ok_or_else(|| format!("shape ({n}, {dim}) is too large"))?;
    let data = &bytes[start + header_len..];
    if data.len() != needed {
        return Err(format!(
            "data has {} bytes, shape ({n}, {dim}) needs {needed}",
            data.len()
        ));
    }
    let values = if width == 8 {
        data.chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect()
    } else {
        data.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")) as f64)
            .collect()
    };
    Ok(PointSet {
        dim: dim.max(1),
        values,
    })
}

/// A `.npy` (format 1.0, float64, shape (N, D)) buffer of `points`.
pub fn npy_bytes(points: &PointSet) -> Vec<u8> {
    npy_bytes_shaped(&points.values, &[points.len(), points.dim])
}

/// A `.npy` (format 1.0, float64, C order) buffer of `values` with `shape` (e.g. images
/// `[N, C, H, W]`).
pub fn npy_bytes_shaped(values: &[f64], shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '<f8', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad so that magic (6) + version (2) + length (2) + header ends on a 64-byte boundary.
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + 8 * values.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Creates the folder `path` will be written into, if missing (every output file the CLI
/// writes goes through this, so `--out new/dir/x.png` works); the error names the folder.
pub fn create_parent_dir(path: &Path) -> Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir)
            .map_err(|e| file_error(dir, format!("cannot create the output folder: {e}"))),
        _ => Ok(()),
    }
}

/// Writes `bytes` to `path`, creating its folder; the error names the file.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    create_parent_dir(path)?;
    std::fs::write(path, bytes).map_err(|e| file_error(path, e.to_string()))
}

/// Writes `points` as `.npy` (by extension) or CSV with an `x0,x1,..` header.
pub fn write_points(path: &Path, points: &PointSet) -> Result<()> {
    if path.extension().is_some_and(|e| e == "npy") {
        return write_file(path, &npy_bytes(points));
    }
    let mut text = String::new();
    let header: Vec<String> = (0..points.dim).map(|k| format!("x{k}")).collect();
    text += &header.join(",");
    text.push('\n');
    for row in points.values.chunks(points.dim) {
        let fields: Vec<String> = row.iter().map(|v| format!("{v}")).collect();
        text += &fields.join(",");
        text.push('\n');
    }
    write_file(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_with_header_and_whitespace() {
        let p = parse_csv("x,y\n1,2\n3 4\n\n-5.5,6e-1\n").unwrap();
        assert_eq!(p.dim, 2);
        assert_eq!(p.values, vec![1.0, 2.0, 3.0, 4.0, -5.5, 0.6]);
        let err = parse_csv("1,2\n3\n").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn npy_round_trip_and_float32() {
        let p = PointSet {
            dim: 3,
            values: vec![1.0, -2.0, 3.5, 0.25, 1e10, -7.0],
        };
        assert_eq!(parse_npy(&npy_bytes(&p)).unwrap(), p);
        // A float32 (N,) file as numpy writes it: header padded to 64 bytes.
        let mut header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }".to_string();
        while !(10 + header.len() + 1).is_multiple_of(64) {
            header.push(' ');
        }
        header.push('\n');
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(header.len() as u16).to_le_bytes());
        b.extend_from_slice(header.as_bytes());
        b.extend_from_slice(&1.5f32.to_le_bytes());
        b.extend_from_slice(&(-2.0f32).to_le_bytes());
        let q = parse_npy(&b).unwrap();
        assert_eq!((q.dim, q.values), (1, vec![1.5, -2.0]));
        b.pop();
        assert!(parse_npy(&b).unwrap_err().contains("bytes"));
    }

    /// A `.npy` buffer with the version-1 preamble and this header text (no padding).
    fn npy_with_header(header: &str, data: &[u8]) -> Vec<u8> {
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(header.len() as u16).to_le_bytes());
        b.extend_from_slice(header.as_bytes());
        b.extend_from_slice(data);
        b
    }

    #[test]
    fn malformed_npy_headers_are_errors_that_say_what_is_wrong() {
        let header = |shape: &str| {
            format!("{{'descr': '<f8', 'fortran_order': False, 'shape': {shape}, }}\n")
        };
        for (shape, want) in [
            ("), (", "shape"),
            ("3", "shape"),
            ("\u{e9}2,)", "shape"),
            ("(x,)", "bad shape entry"),
            ("(4611686018427387904, 4611686018427387904)", "too large"),
            ("(2305843009213693952,)", "too large"),
        ] {
            let bytes = npy_with_header(&header(shape), &[0; 16]);
            let err = parse_npy(&bytes).unwrap_err();
            assert!(err.contains(want), "shape {shape:?}: {err}");
        }
        // A version-2 preamble cut before its 4-byte header length.
        let err = parse_npy(b"\x93NUMPY\x02\x00\x10\x00").unwrap_err();
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn writers_create_the_missing_parent_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let p = PointSet {
            dim: 2,
            values: vec![1.0, 2.0],
        };
        for name in ["a/b/points.csv", "c/points.npy"] {
            let path = tmp.path().join(name);
            write_points(&path, &p).unwrap();
            assert_eq!(load_points(&path).unwrap(), p);
        }
        // A parent that cannot be created (a file is in the way) is named in the error.
        std::fs::write(tmp.path().join("file"), "x").unwrap();
        let blocked = tmp.path().join("file/sub/points.csv");
        let err = write_points(&blocked, &p).unwrap_err().to_string();
        assert!(err.contains("file/sub"), "{err}");
    }

    #[test]
    fn standardisation_gives_zero_mean_unit_std() {
        let p = PointSet {
            dim: 2,
            values: vec![1.0, 10.0, 3.0, 10.0, 5.0, 10.0],
        };
        let (m, s) = p.column_moments();
        assert_eq!(m, vec![3.0, 10.0]);
        assert_eq!(s[1], 1.0);
        let z = p.standardised(&m, &s);
        // (1-3)/sqrt(8/3) exactly up to one rounding: tol 1e-15.
        assert!((z.values[0] + 2.0 / (8.0f64 / 3.0).sqrt()).abs() < 1e-15);
    }
}
