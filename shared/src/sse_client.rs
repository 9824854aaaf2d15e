//! A small Server-Sent Events parser for the CLI, the LLM clients' streamed
//! answers and tests.

/// One parsed event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

/// Feeds bytes in, takes complete events out. Bytes are kept until an
/// event is complete, so a character split across chunks stays whole.
#[derive(Default)]
pub struct SseParser {
    buffer: Vec<u8>,
}

impl SseParser {
    pub fn push(&mut self, chunk: &[u8]) -> Vec<ParsedEvent> {
        self.buffer.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(end) = blank_line_end(&self.buffer) {
            let raw: Vec<u8> = self.buffer.drain(..end).collect();
            let block = String::from_utf8_lossy(&raw);
            let mut id = None;
            let mut event = String::from("message");
            let mut data: Vec<&str> = Vec::new();
            for line in block.lines() {
                if line.starts_with(':') {
                    continue;
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "id" => id = Some(value.to_owned()),
                    "event" => event = value.to_owned(),
                    "data" => data.push(value),
                    _ => {}
                }
            }
            if !data.is_empty() {
                events.push(ParsedEvent {
                    id,
                    event,
                    data: data.join("\n"),
                });
            }
        }
        events
    }
}

/// Where the first blank line (`\n\n` or `\r\n\r\n`) ends, if any.
fn blank_line_end(buffer: &[u8]) -> Option<usize> {
    (0..buffer.len()).find_map(|at| match &buffer[at..] {
        [b'\n', b'\n', ..] => Some(at + 2),
        [b'\n', b'\r', b'\n', ..] => Some(at + 3),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_split_frames_and_skips_comments() {
        let mut parser = SseParser::default();
        assert!(parser
            .push(b": keep-alive\n\nid: 1\nevent: run.qu")
            .is_empty());
        let events = parser.push(b"eued\ndata: {\"a\":1}\n\nid: 2\ndata: x\n\n");
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].id.as_deref(), Some("1"));
        assert_eq!(events[0].event, "run.queued");
        assert_eq!(events[0].data, "{\"a\":1}");
        assert_eq!(events[1].event, "message");
    }

    #[test]
    fn a_character_split_across_chunks_and_crlf_line_ends_parse() {
        let mut parser = SseParser::default();
        let frame = "data: caf\u{e9}\r\n\r\n".as_bytes();
        let (head, tail) = frame.split_at(9); // inside the two bytes of 'é'
        assert!(parser.push(head).is_empty());
        let events = parser.push(tail);
        assert_eq!(events[0].data, "caf\u{e9}");
    }
}
