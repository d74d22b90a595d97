//! Decoding `Transfer-Encoding: chunked`, incrementally and strictly.
//!
//! The decoder never copies: it looks at the bytes buffered so far and says which of them are
//! body data and which are framing. A size line that is not exactly hex digits (optionally
//! followed by extensions) is an error, because lenient chunk parsing is one half of every
//! request-smuggling pair. Trailers are read, checked and dropped.

/// What the next bytes of input are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// The first `n` input bytes are body data: pass them on, then consume them.
    Data(usize),
    /// The first `n` input bytes were framing: consume them and call again.
    Framing(usize),
    /// A framing element is incomplete: read more input first (nothing is consumed).
    NeedMore,
    /// The first `n` input bytes ended the body; everything after them is not part of it.
    Done(usize),
}

/// A malformed chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkError(pub &'static str);

impl std::fmt::Display for ChunkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// The longest size line or trailer line accepted.
pub const MAX_LINE: usize = 4096;
/// The most trailer bytes accepted.
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    Data { remaining: u64 },
    DataEnd,
    Trailers { seen: usize },
    Done,
}

/// Incremental chunked decoder.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder { state: State::Size }
    }
}

impl ChunkedDecoder {
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Classifies the start of `input`, the bytes buffered and not yet consumed.
    pub fn next(&mut self, input: &[u8]) -> Result<Chunk, ChunkError> {
        match self.state {
            State::Size => {
                let Some(line) = line(input)? else {
                    return Ok(Chunk::NeedMore);
                };
                let size = parse_size_line(&input[..line - 2])?;
                self.state = if size == 0 {
                    State::Trailers { seen: 0 }
                } else {
                    State::Data { remaining: size }
                };
                Ok(Chunk::Framing(line))
            }
            State::Data { remaining } => {
                if input.is_empty() {
                    return Ok(Chunk::NeedMore);
                }
                let n = remaining.min(input.len() as u64);
                self.state = match remaining - n {
                    0 => State::DataEnd,
                    left => State::Data { remaining: left },
                };
                Ok(Chunk::Data(n as usize))
            }
            State::DataEnd => match input {
                [b'\r', b'\n', ..] => {
                    self.state = State::Size;
                    Ok(Chunk::Framing(2))
                }
                [] | [b'\r'] => Ok(Chunk::NeedMore),
                _ => Err(ChunkError("chunk data is not followed by CRLF")),
            },
            State::Trailers { seen } => {
                let Some(line) = line(input)? else {
                    return Ok(Chunk::NeedMore);
                };
                if line == 2 {
                    self.state = State::Done;
                    return Ok(Chunk::Done(2));
                }
                let seen = seen + line;
                if seen > MAX_TRAILERS {
                    return Err(ChunkError("trailers are too large"));
                }
                check_trailer(&input[..line - 2])?;
                self.state = State::Trailers { seen };
                Ok(Chunk::Framing(line))
            }
            State::Done => Ok(Chunk::Done(0)),
        }
    }
}

/// The length of the first line, CRLF included, if it is complete.
fn line(input: &[u8]) -> Result<Option<usize>, ChunkError> {
    let window = &input[..input.len().min(MAX_LINE)];
    match window.iter().position(|&b| b == b'\n') {
        Some(0) => Err(ChunkError("bare LF in chunk framing")),
        Some(lf) if window[lf - 1] == b'\r' => Ok(Some(lf + 1)),
        Some(_) => Err(ChunkError("bare LF in chunk framing")),
        None if input.len() >= MAX_LINE => Err(ChunkError("chunk line too long")),
        None => Ok(None),
    }
}

/// `1*HEXDIG [ BWS ";" chunk-ext ]`, without the CRLF.
fn parse_size_line(line: &[u8]) -> Result<u64, ChunkError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(ChunkError("invalid chunk size"));
    }
    if digits > 15 {
        return Err(ChunkError("chunk size too large"));
    }
    let rest = &line[digits..];
    let extension = rest
        .iter()
        .skip_while(|&&b| b == b' ' || b == b'\t')
        .copied()
        .collect::<Vec<u8>>();
    match extension.first() {
        None if rest.is_empty() => {}
        Some(b';')
            if extension
                .iter()
                .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b)) => {}
        _ => return Err(ChunkError("invalid chunk size")),
    }
    let text =
        std::str::from_utf8(&line[..digits]).map_err(|_| ChunkError("invalid chunk size"))?;
    u64::from_str_radix(text, 16).map_err(|_| ChunkError("invalid chunk size"))
}

/// A trailer field must at least look like `name: value` with no control bytes.
fn check_trailer(line: &[u8]) -> Result<(), ChunkError> {
    let colon = line.iter().position(|&b| b == b':');
    let valid_name = colon.is_some_and(|c| c > 0 && line[..c].iter().all(|b| b.is_ascii_graphic()));
    let valid_value = line.iter().all(|&b| b == b'\t' || b >= b' ') && !line.contains(&0x7f);
    if valid_name && valid_value {
        Ok(())
    } else {
        Err(ChunkError("malformed trailer"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `step` bytes; returns the body and the bytes after it.
    pub fn decode(input: &[u8], step: usize) -> Result<(Vec<u8>, usize), ChunkError> {
        let mut decoder = ChunkedDecoder::default();
        let mut body = Vec::new();
        let mut pos = 0;
        let mut available = step.min(input.len());
        loop {
            match decoder.next(&input[pos..available])? {
                Chunk::Data(n) => {
                    body.extend_from_slice(&input[pos..pos + n]);
                    pos += n;
                }
                Chunk::Framing(n) => pos += n,
                Chunk::NeedMore => {
                    if available == input.len() {
                        return Err(ChunkError("truncated"));
                    }
                    available = (available + step).min(input.len());
                }
                Chunk::Done(n) => return Ok((body, pos + n)),
            }
        }
    }

    #[test]
    fn decodes_across_any_split() {
        let input =
            b"5\r\nhello\r\n1;ext=1\r\n \r\n10\r\n0123456789abcdef\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for step in 1..input.len() {
            let (body, end) = decode(input, step).unwrap();
            assert_eq!(body, b"hello 0123456789abcdef", "step {step}");
            assert_eq!(&input[end..], b"NEXT");
        }
    }

    #[test]
    fn refuses_lenient_framing() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"5 \r\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"+5\r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"ffffffffffffffffff\r\n",
            b"0\r\nbad trailer\r\n\r\n",
            b"5;a\0b\r\nhello\r\n0\r\n\r\n",
        ] {
            assert!(
                decode(bad, bad.len()).is_err(),
                "{:?} was accepted",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_line_without_end_is_refused_at_the_limit() {
        let mut decoder = ChunkedDecoder::default();
        assert_eq!(decoder.next(&[b'1'; 100]), Ok(Chunk::NeedMore));
        assert!(decoder.next(&vec![b'1'; MAX_LINE]).is_err());
    }
}
