//! The probe: a TCP sink for throughput and an echo for round trips, and the client that
//! times them. One byte after connecting says which: `T` streams until EOF and gets the byte
//! count back, `L` bounces one byte at a time.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::stats::{median, percentile};

pub const PORT: u16 = 5001;
const CHUNK: usize = 64 * 1024;

#[derive(Debug, Clone, clap::Args)]
pub struct Load {
    /// Bytes streamed per throughput run.
    #[arg(long, default_value_t = 64 << 20)]
    pub bytes: u64,
    /// Throughput runs; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// One-byte round trips on one connection.
    #[arg(long, default_value_t = 2000)]
    pub round_trips: usize,
}

/// What a client measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    pub megabytes_per_second: f64,
    pub round_trip_median_us: f64,
    pub round_trip_p99_us: f64,
}

impl Measured {
    pub fn to_line(self) -> String {
        format!(
            "runq-bench {:.1} {:.1} {:.1}",
            self.megabytes_per_second, self.round_trip_median_us, self.round_trip_p99_us
        )
    }

    /// Reads back what `to_line` printed, from a container's output.
    pub fn from_output(output: &str) -> Option<Measured> {
        let line = output.lines().find_map(|l| l.strip_prefix("runq-bench "))?;
        let mut numbers = line.split_whitespace().map(str::parse::<f64>);
        Some(Measured {
            megabytes_per_second: numbers.next()?.ok()?,
            round_trip_median_us: numbers.next()?.ok()?,
            round_trip_p99_us: numbers.next()?.ok()?,
        })
    }
}

pub fn serve(port: u16) -> Result<()> {
    let listener =
        TcpListener::bind(("0.0.0.0", port)).with_context(|| format!("listen on {port}"))?;
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        std::thread::spawn(move || {
            // A client that goes away mid-run is the client's problem, not the server's.
            let _ = answer(stream);
        });
    }
    Ok(())
}

fn answer(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut kind = [0u8; 1];
    stream.read_exact(&mut kind)?;
    match kind[0] {
        b'T' => {
            let mut buffer = vec![0u8; CHUNK];
            let mut total = 0u64;
            loop {
                let n = stream.read(&mut buffer)?;
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            stream.write_all(&total.to_be_bytes())
        }
        b'L' => {
            let mut byte = [0u8; 1];
            while stream.read(&mut byte)? == 1 {
                stream.write_all(&byte)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

pub fn measure(address: &str, load: &Load) -> Result<Measured> {
    let mut rates = Vec::new();
    for _ in 0..load.runs.max(1) {
        rates.push(throughput(address, load.bytes)?);
    }
    let round_trips = round_trips(address, load.round_trips.max(1))?;
    Ok(Measured {
        megabytes_per_second: median(&rates),
        round_trip_median_us: median(&round_trips),
        round_trip_p99_us: percentile(&round_trips, 99),
    })
}

fn connect(address: &str, kind: u8) -> Result<TcpStream> {
    let mut stream =
        TcpStream::connect(address).with_context(|| format!("connect to {address}"))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    stream.write_all(&[kind])?;
    Ok(stream)
}

/// MB/s (10^6 bytes) from the first byte sent until the server confirmed the last.
fn throughput(address: &str, bytes: u64) -> Result<f64> {
    let mut stream = connect(address, b'T')?;
    let buffer = vec![0x5au8; CHUNK];
    let started = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        stream
            .write_all(&buffer[..n])
            .context("stream to the server")?;
        left -= n as u64;
    }
    stream.shutdown(Shutdown::Write)?;
    let mut count = [0u8; 8];
    stream
        .read_exact(&mut count)
        .context("read the server's count")?;
    let elapsed = started.elapsed().as_secs_f64();
    if u64::from_be_bytes(count) != bytes {
        bail!(
            "the server got {} of {bytes} bytes",
            u64::from_be_bytes(count)
        );
    }
    Ok(bytes as f64 / 1e6 / elapsed)
}

/// Each round trip's time in microseconds.
fn round_trips(address: &str, count: usize) -> Result<Vec<f64>> {
    let mut stream = connect(address, b'L')?;
    let mut times = Vec::with_capacity(count);
    let mut byte = [0u8; 1];
    for _ in 0..count {
        let started = Instant::now();
        stream.write_all(&byte)?;
        stream.read_exact(&mut byte).context("read the echo")?;
        times.push(started.elapsed().as_secs_f64() * 1e6);
    }
    Ok(times)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_line_reads_back() {
        let measured = Measured {
            megabytes_per_second: 812.5,
            round_trip_median_us: 41.0,
            round_trip_p99_us: 97.3,
        };
        let output = format!("noise\n{}\n", measured.to_line());
        assert_eq!(Measured::from_output(&output), Some(measured));
        assert_eq!(Measured::from_output("runq-bench 1 x 2"), None);
    }

    #[test]
    fn the_probe_measures_over_loopback() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || answer(stream));
            }
        });
        let load = Load {
            bytes: 1 << 20,
            runs: 2,
            round_trips: 50,
        };
        let measured = measure(&address, &load).unwrap();
        assert!(measured.megabytes_per_second > 0.0);
        assert!(measured.round_trip_median_us <= measured.round_trip_p99_us);
    }
}
