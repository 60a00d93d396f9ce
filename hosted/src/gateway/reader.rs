//! Reading the backend's replies: record marking (RFC 5531 §11) over a non-blocking socket.
//!
//! Marks and small replies come through a 64 KiB buffer, parsed in place. The rest of a large
//! fragment is read straight into where it belongs, so no reply byte is copied by the gateway
//! after the kernel's own copy out of the socket:
//! - a reply with a DDP-eligible item (an NFSv3 READ's data) has its item read straight into a
//!   run of the responder's registered payload pages, which the reply then carries
//!   ([`rpcrdma_core::responder::ReplyWriter::give_payload`]) into the client's write chunk;
//!   the bytes before and after the item go into the record;
//! - any other reply is read straight into its record.
//!
//! Where the item lies is asked once per reply, with its first bytes (at most [`PEEK`]) and
//! its length, before any byte of the item is read.

use std::io::{ErrorKind, Read};
use std::net::TcpStream;

use rpcrdma_core::pages::PageRun;
use rpcrdma_core::responder::PayloadPages;
use rpcrdma_core::wire::xdr_u32;

/// Largest record accepted from the backend (a 1 MiB READ plus headers, with room).
pub const MAX_RECORD: usize = 2 << 20;
/// Last-fragment bit of a record mark.
pub(super) const LAST_FRAGMENT: u32 = 0x8000_0000;
/// Bytes read into the reader's buffer at a time (record marks and small replies).
const IN_BUF: usize = 64 * 1024;
/// Bytes of a reply's start the reader has before it asks where the item lies: an RPC reply
/// header with the largest verifier (400 bytes) and an NFSv3 READ result's header fit.
pub(super) const PEEK: usize = 512;
/// Items smaller than this are read into the record (copying a few KiB later costs less than
/// holding a page run while the reply waits).
pub(super) const MIN_ITEM: usize = 4096;

/// A reply read from the backend.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Incoming {
    /// The reply's bytes; without the item's when `item` is set.
    pub(super) record: Vec<u8>,
    /// The DDP item, read into payload pages, and its offset in the reply.
    pub(super) item: Option<(PageRun, usize)>,
}

/// Where a reply's item lies: `(offset, length)` in the reply, given its first bytes and its
/// length; `None` to read it whole into the record.
pub(super) type Locate<'l> = dyn FnMut(&[u8], usize) -> Option<(usize, usize)> + 'l;

/// Reads record-marked replies from one backend connection.
pub(super) struct RecordReader {
    /// Bytes received and not parsed yet: `inbuf[at..end]`.
    inbuf: Box<[u8]>,
    at: usize,
    end: usize,
    /// The reply being assembled (without its item's bytes when `item` is set).
    record: Vec<u8>,
    /// Bytes of the reply received so far.
    pos: usize,
    /// Where the fragment being read ends, in reply bytes; `None` between fragments.
    frag_end: Option<usize>,
    /// Whether the fragment being read is the reply's last.
    last: bool,
    /// The item's page run and its offset in the reply.
    item: Option<(PageRun, usize)>,
    /// Bytes received so far.
    pub(super) bytes: u64,
}

/// What one read from the socket gave.
enum Got {
    Bytes(usize),
    /// Nothing for now.
    Later,
}

fn read_from(mut socket: &TcpStream, dst: &mut [u8]) -> Result<Got, String> {
    loop {
        return match socket.read(dst) {
            Ok(0) => Err("the backend closed the connection".into()),
            Ok(n) => Ok(Got::Bytes(n)),
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(Got::Later),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => Err(format!("read from the backend failed: {e}")),
        };
    }
}

impl RecordReader {
    pub(super) fn new() -> RecordReader {
        RecordReader {
            inbuf: vec![0; IN_BUF].into_boxed_slice(),
            at: 0,
            end: 0,
            record: Vec::new(),
            pos: 0,
            frag_end: None,
            last: false,
            item: None,
            bytes: 0,
        }
    }

    /// Forgets a half-read reply (the connection went down); returns the page run its item
    /// was being read into, for the caller to give back.
    #[must_use]
    pub(super) fn reset(&mut self) -> Option<PageRun> {
        self.at = 0;
        self.end = 0;
        self.record.clear();
        self.pos = 0;
        self.frag_end = None;
        self.last = false;
        self.item.take().map(|(run, _)| run)
    }

    /// Receives more bytes behind the unparsed ones.
    fn fill(&mut self, socket: &TcpStream) -> Result<Got, String> {
        if self.at > 0 {
            self.inbuf.copy_within(self.at..self.end, 0);
            self.end -= self.at;
            self.at = 0;
        }
        let got = read_from(socket, &mut self.inbuf[self.end..])?;
        if let Got::Bytes(n) = got {
            self.bytes += n as u64;
            self.end += n;
        }
        Ok(got)
    }

    /// The next complete reply, `None` when the socket has nothing more for now. `locate`
    /// says where a reply's item lies; `pages` are what it is read into (without pages, every
    /// reply is read whole into its record).
    ///
    /// # Errors
    /// Why the connection is unusable: the peer closed it, a read failed, or a record is larger
    /// than [`MAX_RECORD`].
    pub(super) fn next<'p>(
        &mut self,
        socket: &TcpStream,
        locate: &mut Locate<'_>,
        mut pages: Option<&mut (dyn PayloadPages + 'p)>,
    ) -> Result<Option<Incoming>, String> {
        loop {
            if let Some(frag_end) = self.frag_end {
                if self.pos == frag_end {
                    self.frag_end = None;
                    if self.last {
                        self.pos = 0;
                        return Ok(Some(Incoming {
                            record: std::mem::take(&mut self.record),
                            item: self.item.take(),
                        }));
                    }
                    continue;
                }
                let pos = self.pos;
                let dst = match &self.item {
                    None => self.record.get_mut(pos..frag_end),
                    Some((run, at)) => {
                        let (at, n) = (*at, run.len());
                        if pos < at {
                            self.record.get_mut(pos..at.min(frag_end))
                        } else if pos < at + n {
                            let Some(p) = pages.as_deref_mut() else {
                                return Err(
                                    "the payload pages a reply is read into went away".into()
                                );
                            };
                            p.bytes_mut(run).get_mut(pos - at..n.min(frag_end - at))
                        } else {
                            self.record.get_mut(pos - n..frag_end - n)
                        }
                    }
                }
                .unwrap_or_default();
                if dst.is_empty() {
                    return Err("the gateway's reply reader lost its place".into());
                }
                let n = if self.end > self.at {
                    let n = (self.end - self.at).min(dst.len());
                    dst[..n].copy_from_slice(&self.inbuf[self.at..self.at + n]);
                    self.at += n;
                    n
                } else {
                    match read_from(socket, dst)? {
                        Got::Bytes(n) => {
                            self.bytes += n as u64;
                            n
                        }
                        Got::Later => return Ok(None),
                    }
                };
                self.pos += n;
                continue;
            }
            let buffered = &self.inbuf[self.at..self.end];
            let Some(mark) = xdr_u32(buffered, 0) else {
                // Fewer than 4 bytes: receive more behind them.
                match self.fill(socket)? {
                    Got::Bytes(_) => continue,
                    Got::Later => return Ok(None),
                }
            };
            let len = (mark & !LAST_FRAGMENT) as usize;
            let last = mark & LAST_FRAGMENT != 0;
            if self.pos + len > MAX_RECORD {
                return Err("a reply record larger than the gateway accepts".into());
            }
            // A reply in one fragment, large enough to carry an item worth the pages: look at
            // its start before reading any of it.
            if self.pos == 0 && last && len >= MIN_ITEM && pages.is_some() {
                let want = len.min(PEEK);
                if buffered.len() < 4 + want {
                    match self.fill(socket)? {
                        Got::Bytes(_) => continue,
                        Got::Later => return Ok(None),
                    }
                }
                let prefix = &self.inbuf[self.at + 4..self.at + 4 + want];
                let place = locate(prefix, len).filter(|&(at, n)| {
                    n >= MIN_ITEM && at.checked_add(n).is_some_and(|e| e <= len)
                });
                if let (Some((at, n)), Some(p)) = (place, pages.as_deref_mut()) {
                    if let Some(run) = p.alloc(n) {
                        self.item = Some((run, at));
                        self.record = vec![0; len - n];
                        self.at += 4;
                        self.frag_end = Some(len);
                        self.last = true;
                        continue;
                    }
                }
            }
            if self.record.is_empty() {
                // A fresh zeroed allocation: large ones come zeroed from the system.
                self.record = vec![0; len];
            } else {
                self.record.resize(self.pos + len, 0);
            }
            self.at += 4;
            self.frag_end = Some(self.pos + len);
            self.last = last;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rpcrdma_core::pages::PagePool;
    use rpcrdma_softnic::memory::DmaMemory;
    use std::io::Write;
    use std::net::TcpListener;
    use std::time::{Duration, Instant};

    /// A connected loopback pair: (writer, non-blocking reader).
    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let w = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (r, _) = l.accept().unwrap();
        r.set_nonblocking(true).unwrap();
        (w, r)
    }

    /// Reads until `n` replies came or the reader reports an error.
    fn read_replies<'p>(
        reader: &mut RecordReader,
        r: &TcpStream,
        n: usize,
        locate: &mut Locate<'_>,
        mut pages: Option<&mut (dyn PayloadPages + 'p)>,
    ) -> Result<Vec<Incoming>, String> {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while got.len() < n && Instant::now() < deadline {
            match reader.next(r, locate, pages.as_deref_mut())? {
                Some(rec) => got.push(rec),
                None => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        Ok(got)
    }

    fn read_records(
        reader: &mut RecordReader,
        r: &TcpStream,
        n: usize,
    ) -> Result<Vec<Vec<u8>>, String> {
        let got = read_replies(reader, r, n, &mut |_, _| None, None)?;
        Ok(got.into_iter().map(|i| i.record).collect())
    }

    fn fragment(data: &[u8], last: bool) -> Vec<u8> {
        let mut v = (data.len() as u32 | if last { LAST_FRAGMENT } else { 0 })
            .to_be_bytes()
            .to_vec();
        v.extend_from_slice(data);
        v
    }

    /// Writes `stream` in odd pieces, so marks and fragments straddle reads.
    fn write_slowly(mut w: TcpStream, stream: Vec<u8>) -> std::thread::JoinHandle<TcpStream> {
        std::thread::spawn(move || {
            for piece in stream.chunks(77_777) {
                w.write_all(piece).unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
            w
        })
    }

    #[test]
    fn records_of_every_size_and_fragmentation_arrive_whole() {
        let (w, r) = pair();
        let big: Vec<u8> = (0..(1 << 20) + 123).map(|i| (i * 7 + 3) as u8).collect();
        let records: Vec<Vec<u8>> = vec![
            vec![1, 2, 3, 4],
            big.clone(),
            vec![],
            (0..5000u32).map(|i| i as u8).collect(),
            big[..300_000].to_vec(),
        ];
        let mut stream = Vec::new();
        for (k, rec) in records.iter().enumerate() {
            if k == 3 {
                // Three fragments for one record.
                stream.extend(fragment(&rec[..1000], false));
                stream.extend(fragment(&rec[1000..1001], false));
                stream.extend(fragment(&rec[1001..], true));
            } else {
                stream.extend(fragment(rec, true));
            }
        }
        let writer = write_slowly(w, stream);
        let mut reader = RecordReader::new();
        let got = read_records(&mut reader, &r, records.len()).unwrap();
        let _w = writer.join().unwrap();
        assert_eq!(got.len(), records.len());
        for (g, e) in got.iter().zip(&records) {
            assert_eq!(g, e);
        }
        assert_eq!(
            reader.next(&r, &mut |_, _| None, None),
            Ok(None),
            "nothing more"
        );
    }

    #[test]
    fn an_item_is_read_straight_into_payload_pages_and_the_rest_into_the_record() {
        let mut pool: PagePool<'static, 512> =
            PagePool::new(DmaMemory::leak(512 * 4096).region(), 4096).unwrap();
        let (w, r) = pair();
        // Replies: [header 100 bytes | item | 3 bytes after], the item's offset and length
        // written in the header's first two words; a small one; one whose item is too small.
        let reply = |item_len: usize, seed: u8| -> Vec<u8> {
            let mut v = vec![0u8; 100];
            v[..4].copy_from_slice(&100u32.to_be_bytes());
            v[4..8].copy_from_slice(&(item_len as u32).to_be_bytes());
            v.extend((0..item_len).map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed)));
            v.extend([7, 8, 9]);
            v
        };
        let replies = [
            reply(1 << 20, 1),
            reply(10, 2),
            reply(100_000, 3),
            reply(1000, 4),
        ];
        let mut stream = Vec::new();
        for rep in &replies {
            stream.extend(fragment(rep, true));
        }
        let writer = write_slowly(w, stream);
        let mut asked = 0;
        let mut locate = |prefix: &[u8], total: usize| {
            asked += 1;
            assert!(prefix.len() == total.min(PEEK));
            Some((xdr_u32(prefix, 0)? as usize, xdr_u32(prefix, 4)? as usize))
        };
        let mut reader = RecordReader::new();
        let got = read_replies(&mut reader, &r, 4, &mut locate, Some(&mut pool)).unwrap();
        let _w = writer.join().unwrap();
        assert_eq!(asked, 2, "asked only for replies that may carry an item");
        assert_eq!(got.len(), 4);
        for (g, rep) in got.iter().zip(&replies) {
            let item_len = xdr_u32(rep, 4).unwrap() as usize;
            match &g.item {
                Some((run, at)) => {
                    assert!(item_len >= MIN_ITEM);
                    assert_eq!(*at, 100);
                    assert_eq!(pool.bytes(run), &rep[100..100 + item_len]);
                    let mut whole = g.record[..100].to_vec();
                    whole.extend_from_slice(pool.bytes(run));
                    whole.extend_from_slice(&g.record[100..]);
                    assert_eq!(&whole, rep);
                }
                None => {
                    assert!(item_len < MIN_ITEM);
                    assert_eq!(&g.record, rep);
                }
            }
        }
        for g in got {
            if let Some((run, _)) = g.item {
                assert!(pool.free(run));
            }
        }
        assert_eq!(pool.free_pages(), pool.page_count(), "every run given back");
    }

    #[test]
    fn without_free_pages_the_item_is_read_into_the_record() {
        let mut pool: PagePool<'static, 4> =
            PagePool::new(DmaMemory::leak(4 * 4096).region(), 4096).unwrap();
        let (mut w, r) = pair();
        let mut rep = vec![0u8; 8];
        rep.extend(vec![5u8; 100_000]);
        w.write_all(&fragment(&rep, true)).unwrap();
        let mut reader = RecordReader::new();
        let got = read_replies(
            &mut reader,
            &r,
            1,
            &mut |_, _| Some((8, 100_000)),
            Some(&mut pool),
        )
        .unwrap();
        assert_eq!(got[0].item, None);
        assert_eq!(got[0].record, rep);
        // A connection lost half-way through an item gives its run back.
        let mut reader = RecordReader::new();
        let mut pool: PagePool<'static, 64> =
            PagePool::new(DmaMemory::leak(64 * 4096).region(), 4096).unwrap();
        let (mut w, r) = pair();
        w.write_all(&fragment(&rep, true)[..50_000]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while reader.bytes < 50_000 && Instant::now() < deadline {
            let next = reader.next(&r, &mut |_, _| Some((8, 100_000)), Some(&mut pool));
            assert_eq!(next, Ok(None), "half a reply is no reply");
        }
        assert_eq!(reader.bytes, 50_000);
        let run = reader.reset().expect("the item's run");
        assert!(pool.free(run));
        assert_eq!(pool.free_pages(), pool.page_count());
    }

    #[test]
    fn an_oversized_record_and_a_closed_peer_are_errors() {
        let (mut w, r) = pair();
        w.write_all(&((MAX_RECORD as u32 + 1) | LAST_FRAGMENT).to_be_bytes())
            .unwrap();
        let mut reader = RecordReader::new();
        let err = read_records(&mut reader, &r, 1).unwrap_err();
        assert!(err.contains("larger than"), "{err}");

        let (mut w, r) = pair();
        w.write_all(&fragment(&[9; 100], true)[..50]).unwrap();
        drop(w);
        let mut reader = RecordReader::new();
        let err = read_records(&mut reader, &r, 1).unwrap_err();
        assert!(err.contains("closed"), "{err}");
        assert_eq!(reader.reset(), None);
        assert!(reader.record.is_empty() && reader.frag_end.is_none());
    }
}
