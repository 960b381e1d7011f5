//! Streaming body rewriting: internal origins in HTML, CSS and JavaScript become the public
//! one, chunk by chunk.
//!
//! Memory is bounded: between chunks only the last few bytes are held back (fewer than the
//! longest spelling plus one), so a match split across two chunks is still found and a page
//! is never buffered whole. A compressed body is decoded on the way (gzip, deflate, br) and
//! sent on uncompressed; one chunk may not inflate past [`MAX_INFLATED_CHUNK`].

use aho_corasick::{AhoCorasick, MatchKind};
use bytes::Bytes;
use std::io::Write;
use thiserror::Error;

/// Most bytes one compressed chunk may inflate to (a decompression bomb stops here).
pub const MAX_INFLATED_CHUNK: usize = 8 * 1024 * 1024;

/// Why a body could not be rewritten (the response is cut short, never sent half-rewritten
/// as if whole).
#[derive(Debug, Error)]
pub enum RewriteError {
    /// The compressed body does not decode.
    #[error("the {encoding} body does not decode: {reason}")]
    Decode {
        /// Content encoding.
        encoding: &'static str,
        /// What the decoder said.
        reason: String,
    },
    /// One chunk inflated past [`MAX_INFLATED_CHUNK`].
    #[error("a compressed chunk inflates past {MAX_INFLATED_CHUNK} bytes")]
    TooLarge,
    /// The spellings do not make a matcher (cannot happen with origins; kept typed).
    #[error("no matcher for the internal origins: {0}")]
    Matcher(String),
}

/// How the upstream encoded the body.
pub enum Decoding {
    /// As is.
    Identity,
    /// `gzip` / `x-gzip`.
    Gzip(Box<flate2::write::GzDecoder<Vec<u8>>>),
    /// `deflate` (zlib-wrapped, RFC 9110 §8.4.1.2).
    Deflate(Box<flate2::write::ZlibDecoder<Vec<u8>>>),
    /// `br`.
    Brotli(Box<brotli::DecompressorWriter<Vec<u8>>>),
}

impl std::fmt::Debug for Decoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Decoding {
    /// The decoder for a `Content-Encoding` (absent = identity); `None` for one this
    /// gateway does not read (then the body is passed through untouched).
    pub fn for_encoding(encoding: Option<&str>) -> Option<Self> {
        Some(match encoding {
            None | Some("" | "identity") => Self::Identity,
            Some("gzip" | "x-gzip") => {
                Self::Gzip(Box::new(flate2::write::GzDecoder::new(Vec::new())))
            }
            Some("deflate") => Self::Deflate(Box::new(flate2::write::ZlibDecoder::new(Vec::new()))),
            Some("br") => Self::Brotli(Box::new(brotli::DecompressorWriter::new(Vec::new(), 4096))),
            Some(_) => return None,
        })
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Gzip(_) => "gzip",
            Self::Deflate(_) => "deflate",
            Self::Brotli(_) => "br",
        }
    }

    /// The plain bytes `chunk` decodes to (all that is left, at the end).
    fn decode(&mut self, chunk: &[u8], end: bool) -> Result<Vec<u8>, RewriteError> {
        let name = self.name();
        let failed = |e: std::io::Error| RewriteError::Decode {
            encoding: name,
            reason: e.to_string(),
        };
        let out = match self {
            Self::Identity => return Ok(chunk.to_vec()),
            Self::Gzip(d) => {
                d.write_all(chunk).map_err(failed)?;
                if end {
                    d.try_finish().map_err(failed)?;
                }
                std::mem::take(d.get_mut())
            }
            Self::Deflate(d) => {
                d.write_all(chunk).map_err(failed)?;
                if end {
                    d.try_finish().map_err(failed)?;
                }
                std::mem::take(d.get_mut())
            }
            Self::Brotli(d) => {
                d.write_all(chunk).map_err(failed)?;
                if end {
                    d.close().map_err(failed)?;
                }
                std::mem::take(d.get_mut())
            }
        };
        if out.len() > MAX_INFLATED_CHUNK {
            return Err(RewriteError::TooLarge);
        }
        Ok(out)
    }
}

/// One response's rewriter: decoder, matcher and the bytes held back for the next chunk.
#[derive(Debug)]
pub struct BodyRewriter {
    matcher: AhoCorasick,
    replacements: Vec<Vec<u8>>,
    /// Longest spelling: a match can start no later than this far from a chunk's end.
    longest: usize,
    held: Vec<u8>,
    decoding: Decoding,
}

/// Bytes that may continue a host name or port: an origin followed by one of these is a
/// different origin (`http://intranet:80` is not a prefix match of `http://intranet:8080`).
fn continues_origin(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b':' | b'_')
}

impl BodyRewriter {
    /// Rewrites every spelling in `from` (and its JSON-escaped form, `http:\/\/…`) to `to`.
    pub fn new(from: &[String], to: &str, decoding: Decoding) -> Result<Self, RewriteError> {
        let mut patterns = Vec::new();
        let mut replacements = Vec::new();
        let escaped_to = to.replace('/', "\\/");
        for spelling in from {
            patterns.push(spelling.clone());
            replacements.push(to.as_bytes().to_vec());
            patterns.push(spelling.replace('/', "\\/"));
            replacements.push(escaped_to.as_bytes().to_vec());
        }
        let longest = patterns.iter().map(String::len).max().unwrap_or(0);
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .ascii_case_insensitive(true)
            .build(&patterns)
            .map_err(|e| RewriteError::Matcher(e.to_string()))?;
        Ok(Self {
            matcher,
            replacements,
            longest,
            held: Vec::new(),
            decoding,
        })
    }

    /// The rewritten bytes for one chunk of the upstream's body (`end`: it was the last).
    pub fn feed(&mut self, chunk: &[u8], end: bool) -> Result<Bytes, RewriteError> {
        let plain = self.decoding.decode(chunk, end)?;
        let mut text = std::mem::take(&mut self.held);
        text.extend_from_slice(&plain);
        // A match starting before `settled` has all the bytes it could need, and the one
        // after it (to tell an origin from a longer one): it is decided now.
        let settled = if end {
            text.len()
        } else {
            text.len().saturating_sub(self.longest)
        };
        let mut out = Vec::with_capacity(text.len());
        let mut copied = 0;
        let mut at = 0;
        while at < settled {
            let Some(found) = self
                .matcher
                .find(aho_corasick::Input::new(&text).span(at..text.len()))
            else {
                break;
            };
            if found.start() >= settled {
                break;
            }
            let next = text.get(found.end()).copied();
            if next.is_some_and(continues_origin) {
                at = found.start().saturating_add(1);
                continue;
            }
            out.extend_from_slice(text.get(copied..found.start()).unwrap_or_default());
            out.extend_from_slice(
                self.replacements
                    .get(found.pattern().as_usize())
                    .map_or(&[][..], Vec::as_slice),
            );
            copied = found.end();
            at = found.end();
        }
        let keep_from = if end { text.len() } else { settled.max(copied) };
        out.extend_from_slice(text.get(copied..keep_from).unwrap_or_default());
        self.held = text.get(keep_from..).unwrap_or_default().to_vec();
        Ok(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewriter(decoding: Decoding) -> BodyRewriter {
        BodyRewriter::new(
            &[
                "http://intranet-host:8080".to_string(),
                "http://legacy".to_string(),
                "http://legacy:80".to_string(),
            ],
            "https://hr.example.com",
            decoding,
        )
        .unwrap()
    }

    fn run(rw: &mut BodyRewriter, chunks: &[&[u8]]) -> String {
        let mut out = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            out.extend_from_slice(&rw.feed(c, i + 1 == chunks.len()).unwrap());
        }
        String::from_utf8(out).unwrap()
    }

    const PAGE: &str = r#"<a href="http://intranet-host:8080/a">a</a> <img src='http://LEGACY/logo.png'> {"u":"http:\/\/intranet-host:8080\/api"} http://intranet-host:80801/no http://legacy.evil/no http://legacy:80/yes"#;
    const EXPECTED: &str = r#"<a href="https://hr.example.com/a">a</a> <img src='https://hr.example.com/logo.png'> {"u":"https:\/\/hr.example.com\/api"} http://intranet-host:80801/no http://legacy.evil/no https://hr.example.com/yes"#;

    #[test]
    fn origins_are_rewritten_and_longer_origins_are_not() {
        assert_eq!(
            run(&mut rewriter(Decoding::Identity), &[PAGE.as_bytes()]),
            EXPECTED
        );
    }

    #[test]
    fn every_split_point_gives_the_same_page() {
        let page = PAGE.as_bytes();
        for cut in 0..=page.len() {
            let (a, b) = page.split_at(cut);
            assert_eq!(
                run(&mut rewriter(Decoding::Identity), &[a, b]),
                EXPECTED,
                "cut {cut}"
            );
        }
        // One byte at a time, and an empty last chunk.
        let mut rw = rewriter(Decoding::Identity);
        let mut out = Vec::new();
        for b in page {
            out.extend_from_slice(&rw.feed(&[*b], false).unwrap());
            assert!(
                rw.held.len() <= rw.longest,
                "held back more than a spelling"
            );
        }
        out.extend_from_slice(&rw.feed(&[], true).unwrap());
        assert_eq!(String::from_utf8(out).unwrap(), EXPECTED);
    }

    #[test]
    fn compressed_bodies_are_decoded_in_pieces() {
        use flate2::write::{GzEncoder, ZlibEncoder};
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(PAGE.as_bytes()).unwrap();
        let gz = gz.finish().unwrap();
        let mut zl = ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zl.write_all(PAGE.as_bytes()).unwrap();
        let zl = zl.finish().unwrap();
        let mut br = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut br, 4096, 5, 22);
            w.write_all(PAGE.as_bytes()).unwrap();
        }
        for (name, encoded) in [("gzip", gz), ("deflate", zl), ("br", br)] {
            let (a, b) = encoded.split_at(encoded.len() / 2);
            let decoding = Decoding::for_encoding(Some(name)).unwrap();
            assert_eq!(run(&mut rewriter(decoding), &[a, b]), EXPECTED, "{name}");
        }
    }

    #[test]
    fn a_corrupt_or_inflating_body_is_an_error_not_a_panic() {
        let mut rw = rewriter(Decoding::for_encoding(Some("gzip")).unwrap());
        assert!(rw.feed(b"not gzip at all", true).is_err());
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&vec![0u8; MAX_INFLATED_CHUNK + 1]).unwrap();
        let bomb = gz.finish().unwrap();
        let mut rw = rewriter(Decoding::for_encoding(Some("gzip")).unwrap());
        assert!(matches!(rw.feed(&bomb, true), Err(RewriteError::TooLarge)));
        assert!(Decoding::for_encoding(Some("zstd")).is_none());
    }
}
