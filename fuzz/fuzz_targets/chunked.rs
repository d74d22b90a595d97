//! Chunked decoder: never a panic or a stall; the same answer whatever the input's split into
//! reads; a body encoded with arbitrary chunk sizes and extensions decodes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::forward::{Chunk, ChunkError, ChunkedDecoder};

/// Decodes `input` as it would arrive in reads of `step` bytes: (body, bytes used) or the error.
fn decode(input: &[u8], step: usize) -> Result<(Vec<u8>, usize), ChunkError> {
    let mut decoder = ChunkedDecoder::default();
    let mut body = Vec::new();
    let (mut pos, mut available) = (0, step.min(input.len()));
    for _ in 0..=2 * input.len() + 2 {
        match decoder.next(&input[pos..available])? {
            Chunk::Data(n) => {
                assert!(n > 0 && pos + n <= available);
                body.extend_from_slice(&input[pos..pos + n]);
                pos += n;
            }
            Chunk::Framing(n) => {
                assert!(n > 0 && pos + n <= available);
                pos += n;
            }
            Chunk::NeedMore if available == input.len() => return Err(ChunkError("truncated")),
            Chunk::NeedMore => available = (available + step).min(input.len()),
            Chunk::Done(n) => {
                assert!(pos + n <= available);
                assert!(decoder.is_done());
                return Ok((body, pos + n));
            }
        }
    }
    panic!("the decoder made no progress");
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let whole = decode(input, input.len().max(1));
    let split = decode(input, usize::from(control % 64) + 1);
    assert_eq!(whole, split, "split into reads of {}", control % 64 + 1);

    // The same bytes as a body: chunk sizes from the control byte, an extension on odd chunks.
    let mut encoded = Vec::new();
    let size = usize::from(control) + 1;
    for (i, chunk) in input.chunks(size).enumerate() {
        encoded.extend_from_slice(format!("{:x}", chunk.len()).as_bytes());
        if i % 2 == 1 {
            encoded.extend_from_slice(b" ;name=\"v\"");
        }
        encoded.extend_from_slice(b"\r\n");
        encoded.extend_from_slice(chunk);
        encoded.extend_from_slice(b"\r\n");
    }
    encoded.extend_from_slice(b"0\r\nTrailer: x\r\n\r\n");
    let len = encoded.len();
    assert_eq!(decode(&encoded, size % 7 + 1), Ok((input.to_vec(), len)));
});
