//! Small pieces of HTML: escaping, data URIs (base64, RFC 4648), JSON blocks and the page shell
//! with its stylesheet. Nothing here refers to anything outside the page.

/// Text escaped for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A relative path as an `href` value: bytes outside `A-Z a-z 0-9 - . _ ~ /` percent-encoded
/// (RFC 3986), then escaped for the attribute.
pub fn href(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Standard base64 with padding (RFC 4648 §4).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A `data:` URI holding `bytes` of type `mime`, for an `<img src>` that needs no file.
pub fn data_uri(mime: &str, bytes: &[u8]) -> String {
    format!("data:{mime};base64,{}", base64(bytes))
}

/// A JSON value as a `<script type="application/json">` block; `<` is written as `\u003c` so
/// no string inside can close the element.
pub fn json_script(class: &str, value: &serde_json::Value) -> String {
    let text = value.to_string().replace('<', "\\u003c");
    format!(
        "<script type=\"application/json\" class=\"{}\">{text}</script>",
        escape(class)
    )
}

/// A table from a header row and body rows of already-escaped cell HTML.
pub fn table(class: &str, header: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!("<table class=\"{}\"><thead><tr>", escape(class));
    for h in header {
        out.push_str(&format!("<th>{}</th>", escape(h)));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            out.push_str(&format!("<td>{cell}</td>"));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

const STYLE: &str = "
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 0 auto;
  max-width: 1320px; padding: 16px 24px 48px; color: #1d2330; background: #fff; }
h1 { font-size: 1.5em; margin: 0.4em 0 0.1em; }
h2 { font-size: 1.15em; margin: 1.6em 0 0.5em; border-bottom: 1px solid #d9dde5; padding-bottom: 4px; }
.sub { color: #5a6272; margin: 0 0 1em; }
.warn { background: #fff4d6; border: 1px solid #e8c35a; padding: 6px 10px; border-radius: 4px; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.3em 0 0.8em; }
th, td { border: 1px solid #d9dde5; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f5f9; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.kv th { width: 13em; }
.plots { display: flex; flex-wrap: wrap; gap: 12px 20px; }
figure.plot { margin: 0; flex: 1 1 560px; max-width: 640px; }
figure.plot svg { width: 100%; height: auto; display: block; }
.previews { display: flex; flex-direction: column; gap: 14px; }
.preview { border: 1px solid #e3e6ec; border-radius: 6px; padding: 8px 10px; }
.preview h3 { font-size: 0.95em; margin: 0 0 6px; }
.scatter-row { display: flex; flex-wrap: wrap; gap: 10px; }
.scatter-row svg { width: 250px; height: 250px; }
.grid-labels { display: flex; font-size: 0.72em; color: #5a6272; }
.grid-labels span { text-align: center; overflow: hidden; white-space: nowrap; }
img.pixelated { image-rendering: pixelated; display: block; }
pre { background: #f6f8fa; padding: 8px; overflow-x: auto; font-size: 0.82em; }
details summary { cursor: pointer; color: #2a5db0; }
ul.files { columns: 3; font-size: 0.9em; }
.muted { color: #7a8190; }
";

/// The whole page around `body` (already HTML).
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n",
        escape(title)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        // RFC 4648 §10 test vectors (exact strings).
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), want, "{input:?}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn escaping_and_json_blocks_cannot_break_out() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(href("runs/a b/\"x\".html"), "runs/a%20b/%22x%22.html");
        let block = json_script("d", &serde_json::json!({"s": "</script><b>"}));
        assert!(!block[..block.len() - "</script>".len()].contains("</script>"));
        let back: serde_json::Value = serde_json::from_str(
            block
                .trim_start_matches("<script type=\"application/json\" class=\"d\">")
                .trim_end_matches("</script>"),
        )
        .unwrap();
        assert_eq!(back["s"], "</script><b>");
    }
}
