//! `Transfer-Encoding: chunked`, decoded as it arrives (RFC 9112 §7.1).

use core::ops::Range;

use super::response::{Error, Limits};

/// The longest chunk-size line (size and extensions).
const MAX_CHUNK_LINE: usize = 1024;

/// A streaming decoder, a line at a time: data is handed out in runs
/// (ranges of the input); a size or trailer line not complete yet is left
/// unused, to be fed again with what follows it. Extensions and trailers
/// are read and dropped; bare LF line ends are accepted.
#[derive(Debug, Clone, Copy)]
pub(super) struct Chunked {
    state: Chunk,
    /// Bytes of the trailer section.
    trailer: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// A chunk-size line.
    Size,
    /// Chunk data still to come.
    Data(usize),
    /// The line end after chunk data.
    DataEnd,
    /// Trailer lines, up to an empty one.
    Trailer,
    /// The last chunk and trailers are read.
    Done,
}

impl Chunked {
    pub(super) const fn new() -> Chunked {
        Chunked {
            state: Chunk::Size,
            trailer: 0,
        }
    }

    pub(super) fn done(&self) -> bool {
        self.state == Chunk::Done
    }

    /// Decodes from `input`: the bytes used, and the next run of data in
    /// them if there is one (decoding stops after it). `body` counts the
    /// data so far, against `limits.body`.
    pub(super) fn feed(
        &mut self,
        input: &[u8],
        body: &mut usize,
        limits: Limits,
    ) -> Result<(usize, Option<Range<usize>>), Error> {
        let bad = Error::Malformed;
        let mut i = 0;
        loop {
            let rest = &input[i..];
            match self.state {
                Chunk::Done => return Ok((i, None)),
                Chunk::Data(left) if !rest.is_empty() => {
                    let n = left.min(rest.len());
                    self.state = if n == left {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left - n)
                    };
                    *body += n;
                    return Ok((i + n, Some(i..i + n)));
                }
                Chunk::Data(_) => return Ok((i, None)),
                _ => {}
            }
            // A line: the end of chunk data, a chunk size or a trailer. Not
            // complete yet: within its bound, left to be fed again.
            let trailer = self.state == Chunk::Trailer;
            let bound = if trailer {
                limits.head - self.trailer.min(limits.head)
            } else {
                MAX_CHUNK_LINE
            };
            let Some(eol) = rest.iter().position(|&b| b == b'\n') else {
                return if rest.len() > bound {
                    Err(Error::HeadTooLarge)
                } else {
                    Ok((i, None))
                };
            };
            let line = &rest[..eol];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.len() > bound {
                return Err(Error::HeadTooLarge);
            }
            i += eol + 1;
            self.state = match self.state {
                Chunk::DataEnd if line.is_empty() => Chunk::Size,
                Chunk::Trailer if line.is_empty() => Chunk::Done,
                Chunk::Trailer => {
                    self.trailer += line.len();
                    Chunk::Trailer
                }
                Chunk::Size => {
                    // Hex digits (at most 16), then nothing or an extension.
                    let mut size: usize = 0;
                    let mut digits = 0;
                    for &b in line {
                        let d = match b {
                            b'0'..=b'9' => b - b'0',
                            b'a'..=b'f' => b - b'a' + 10,
                            b'A'..=b'F' => b - b'A' + 10,
                            b';' | b' ' | b'\t' => break,
                            _ => return Err(bad),
                        };
                        // Past `usize`: more than any limit.
                        size = size.checked_mul(16).map_or(usize::MAX, |n| n | usize::from(d));
                        digits += 1;
                    }
                    if digits == 0 || digits > 16 {
                        return Err(bad);
                    }
                    match size {
                        0 => Chunk::Trailer,
                        n if n <= limits.body.saturating_sub(*body) => Chunk::Data(n),
                        _ => return Err(Error::BodyTooLarge),
                    }
                }
                _ => return Err(bad),
            };
        }
    }
}
