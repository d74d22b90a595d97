//! A small authoritative-style DNS server for the tests, on a loopback UDP port.
//!
//! It answers A and AAAA queries from a table with a TTL per name, answers NXDOMAIN (with an
//! SOA whose minimum is the negative TTL) for the names it is told do not exist, answers
//! SERVFAIL for others, can hold an answer back for a while, and never answers a name it knows
//! nothing about. Every query is counted per (name, type); a UDP retransmission repeats the
//! message id and is not counted as a new query.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;

pub const A: u16 = 1;
pub const AAAA: u16 = 28;
const SOA: u16 = 6;
const CLASS_IN: u16 = 1;
const NOERROR: u8 = 0;
const SERVFAIL: u8 = 2;
const NXDOMAIN: u8 = 3;

#[derive(Default)]
struct Table {
    /// Addresses by name, with the TTL in force when they were added.
    addrs: HashMap<String, (Vec<IpAddr>, u32)>,
    nxdomain: HashSet<String>,
    servfail: HashSet<String>,
    delays: HashMap<String, Duration>,
    /// (name, type) queries that are never answered, though the name has addresses.
    dropped: HashSet<(String, u16)>,
    ttl: u32,
    negative_ttl: u32,
    /// (name, type) → message ids seen.
    seen: HashMap<(String, u16), HashSet<u16>>,
}

/// A running test DNS server; it stops with the test's runtime.
#[derive(Clone)]
pub struct DnsServer {
    pub addr: SocketAddr,
    table: Arc<Mutex<Table>>,
}

impl DnsServer {
    /// Starts a server on 127.0.0.1, answering with TTL 300 and negative TTL 60 until told
    /// otherwise.
    pub async fn start() -> DnsServer {
        DnsServer::start_on("127.0.0.1:0").await
    }

    pub async fn start_on(addr: &str) -> DnsServer {
        let socket = Arc::new(UdpSocket::bind(addr).await.unwrap());
        let addr = socket.local_addr().unwrap();
        let table = Arc::new(Mutex::new(Table {
            ttl: 300,
            negative_ttl: 60,
            ..Table::default()
        }));
        let server = DnsServer {
            addr,
            table: Arc::clone(&table),
        };
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let Some(query) = Query::parse(&buf[..len]) else {
                    continue;
                };
                let (reply, delay) = {
                    let mut table = table.lock().unwrap();
                    let seen = table
                        .seen
                        .entry((query.name.clone(), query.qtype))
                        .or_default();
                    seen.insert(query.id);
                    let delay = table.delays.get(&query.name).copied();
                    (table.reply(&query), delay)
                };
                let Some(reply) = reply else { continue };
                let socket = Arc::clone(&socket);
                tokio::spawn(async move {
                    if let Some(delay) = delay {
                        tokio::time::sleep(delay).await;
                    }
                    let _ = socket.send_to(&reply, peer).await;
                });
            }
        });
        server
    }

    /// `name` has these addresses (A and AAAA are taken from the list, in its order), with
    /// the TTL set by [`DnsServer::ttl`] before this call.
    pub fn answer(&self, name: &str, addrs: &[&str]) -> &Self {
        let addrs = addrs.iter().map(|a| a.parse().unwrap()).collect();
        let mut table = self.table.lock().unwrap();
        let ttl = table.ttl;
        table.addrs.insert(key(name), (addrs, ttl));
        self
    }

    /// `name` does not exist.
    pub fn nxdomain(&self, name: &str) -> &Self {
        self.table.lock().unwrap().nxdomain.insert(key(name));
        self
    }

    /// Queries for `name` get SERVFAIL.
    pub fn servfail(&self, name: &str) -> &Self {
        self.table.lock().unwrap().servfail.insert(key(name));
        self
    }

    /// Answers about `name` leave only after `delay`.
    pub fn delay(&self, name: &str, delay: Duration) -> &Self {
        self.table.lock().unwrap().delays.insert(key(name), delay);
        self
    }

    /// Queries for `name` of type `qtype` are never answered (a server that drops AAAA).
    pub fn drop_type(&self, name: &str, qtype: u16) -> &Self {
        let mut table = self.table.lock().unwrap();
        table.dropped.insert((key(name), qtype));
        self
    }

    /// The TTL of the address records of names added from now on.
    pub fn ttl(&self, seconds: u32) -> &Self {
        self.table.lock().unwrap().ttl = seconds;
        self
    }

    /// The SOA minimum (the negative-caching TTL) of NXDOMAIN and no-data answers.
    pub fn negative_ttl(&self, seconds: u32) -> &Self {
        self.table.lock().unwrap().negative_ttl = seconds;
        self
    }

    /// Distinct queries received for `name` and `qtype` (retransmissions not counted again).
    pub fn queries(&self, name: &str, qtype: u16) -> usize {
        let table = self.table.lock().unwrap();
        table.seen.get(&(key(name), qtype)).map_or(0, HashSet::len)
    }

    /// Distinct queries received for any name and type.
    pub fn total_queries(&self) -> usize {
        let table = self.table.lock().unwrap();
        table.seen.values().map(HashSet::len).sum()
    }
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

struct Query<'a> {
    id: u16,
    flags: u16,
    /// The question section exactly as received (name case included).
    question: &'a [u8],
    name: String,
    qtype: u16,
}

impl<'a> Query<'a> {
    fn parse(packet: &'a [u8]) -> Option<Query<'a>> {
        if packet.len() < 12 {
            return None;
        }
        let id = u16::from_be_bytes([packet[0], packet[1]]);
        let flags = u16::from_be_bytes([packet[2], packet[3]]);
        let qdcount = u16::from_be_bytes([packet[4], packet[5]]);
        if flags & 0x8000 != 0 || qdcount != 1 {
            return None;
        }
        let mut at = 12;
        let mut labels = Vec::new();
        loop {
            let len = *packet.get(at)? as usize;
            at += 1;
            if len == 0 {
                break;
            }
            if len > 63 {
                return None; // no compression in a question we sent ourselves
            }
            let label = packet.get(at..at + len)?;
            labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
            at += len;
        }
        let qtype = u16::from_be_bytes([*packet.get(at)?, *packet.get(at + 1)?]);
        let end = at + 4;
        packet.get(at..end)?;
        Some(Query {
            id,
            flags,
            question: &packet[12..end],
            name: labels.join("."),
            qtype,
        })
    }
}

impl Table {
    /// The answer to send, or `None` to stay silent.
    fn reply(&self, query: &Query) -> Option<Vec<u8>> {
        if self.dropped.contains(&(query.name.clone(), query.qtype)) {
            return None;
        }
        if self.servfail.contains(&query.name) {
            return Some(message(query, SERVFAIL, &[], None));
        }
        if self.nxdomain.contains(&query.name) {
            return Some(message(query, NXDOMAIN, &[], Some(self.negative_ttl)));
        }
        let (addrs, ttl) = self.addrs.get(&query.name)?;
        let records: Vec<Vec<u8>> = addrs
            .iter()
            .filter_map(|ip| match (ip, query.qtype) {
                (IpAddr::V4(v4), A) => Some(record(A, *ttl, &v4.octets())),
                (IpAddr::V6(v6), AAAA) => Some(record(AAAA, *ttl, &v6.octets())),
                _ => None,
            })
            .collect();
        if records.is_empty() {
            // The name exists but has no record of this type: NOERROR, no data.
            return Some(message(query, NOERROR, &[], Some(self.negative_ttl)));
        }
        Some(message(query, NOERROR, &records, None))
    }
}

/// A resource record owned by the question's name (a pointer to offset 12).
fn record(rtype: u16, ttl: u32, rdata: &[u8]) -> Vec<u8> {
    let mut out = vec![0xC0, 0x0C];
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    out.extend_from_slice(rdata);
    out
}

/// An SOA for the question's name whose TTL and minimum are `negative_ttl`.
fn soa(negative_ttl: u32) -> Vec<u8> {
    let mut rdata = vec![0, 0]; // MNAME and RNAME: the root
    for value in [1u32, 3600, 600, 86400, negative_ttl] {
        rdata.extend_from_slice(&value.to_be_bytes());
    }
    record(SOA, negative_ttl, &rdata)
}

fn message(query: &Query, rcode: u8, answers: &[Vec<u8>], negative_ttl: Option<u32>) -> Vec<u8> {
    let authority: Vec<Vec<u8>> = negative_ttl.map(soa).into_iter().collect();
    let rd = query.flags & 0x0100;
    // QR, AA, the client's RD, RA, and the response code.
    let flags: u16 = 0x8000 | 0x0400 | rd | 0x0080 | u16::from(rcode);
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&query.id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    for count in [1, answers.len(), authority.len(), 0] {
        out.extend_from_slice(&(count as u16).to_be_bytes());
    }
    out.extend_from_slice(query.question);
    for rr in answers.iter().chain(&authority) {
        out.extend_from_slice(rr);
    }
    out
}
