#!/usr/bin/env python3
"""logreplay: reads a dm-log-writes log and replays it onto an image, entry by entry.

Usage:
  logreplay.py list LOG
      one line per entry: INDEX FLAGS SECTOR NR_SECTORS [MARK]
      (FLAGS letters: F flush, U fua, D discard, M mark, m metadata, '-' none);
      the first line is "sectorsize N entries N".
  logreplay.py replay LOG IMAGE FIRST LAST
      writes entries FIRST..LAST (inclusive, 0-based) onto IMAGE (a file or a block
      device): the data of each write at its sector, zeros over each discard.
      Applied to a copy of the device as it was when logging started, entries 0..N give
      the device as a power loss right after entry N could leave it.

The log format (Documentation/admin-guide/device-mapper/log-writes.rst): the first
sector of the log device is the super block (le64 magic 0x6a736677736872, le64
version 1, le64 nr_entries, le32 sectorsize: the data device's logical block size);
each entry follows as one header sector (le64 sector, le64 nr_sectors, le64 flags,
le64 data_len; a mark's name follows the header in the same sector) and, unless it is
a discard or has no sectors, the nr_sectors sectors of data it wrote. Sectors are in
units of sectorsize. Writes are logged in the order they completed before a flush, so
each flush or FUA entry is a point a power loss may leave the device at.
"""

import struct
import sys

MAGIC = 0x6A736677736872
FLUSH, FUA, DISCARD, MARK, METADATA = 1, 2, 4, 8, 16
HEADER = struct.Struct("<QQQQ")
SUPER = struct.Struct("<QQQI")
ZEROS = bytes(1 << 20)


class LogError(Exception):
    pass


def read_super(log):
    log.seek(0)
    raw = log.read(SUPER.size)
    if len(raw) < SUPER.size:
        raise LogError("log too short for its super block")
    magic, version, entries, sectorsize = SUPER.unpack(raw)
    if magic != MAGIC:
        raise LogError("not a dm-log-writes log (magic %#x)" % magic)
    if version != 1:
        raise LogError("log version %d, not 1" % version)
    if sectorsize < 512 or sectorsize & (sectorsize - 1):
        raise LogError("bad sector size %d" % sectorsize)
    return entries, sectorsize


def entries(log):
    """Yields (index, flags, sector, nr_sectors, mark, data_offset) for every entry."""
    count, sectorsize = read_super(log)
    offset = sectorsize
    for index in range(count):
        log.seek(offset)
        header = log.read(sectorsize)
        if len(header) < sectorsize:
            raise LogError("entry %d: log ends inside its header" % index)
        sector, nr_sectors, flags, data_len = HEADER.unpack_from(header)
        mark = None
        if flags & MARK:
            if data_len > sectorsize - HEADER.size:
                raise LogError("entry %d: mark of %d bytes" % (index, data_len))
            mark = header[HEADER.size:HEADER.size + data_len].decode("utf-8", "replace")
        data_offset = offset + sectorsize
        yield index, flags, sector, nr_sectors, mark, data_offset
        offset = data_offset
        if not flags & DISCARD:
            offset += nr_sectors * sectorsize


def flag_letters(flags):
    letters = "".join(c for bit, c in ((FLUSH, "F"), (FUA, "U"), (DISCARD, "D"), (MARK, "M"), (METADATA, "m")) if flags & bit)
    return letters or "-"


def list_log(path):
    with open(path, "rb") as log:
        count, sectorsize = read_super(log)
        out = ["sectorsize %d entries %d" % (sectorsize, count)]
        for index, flags, sector, nr_sectors, mark, _ in entries(log):
            line = "%d %s %d %d" % (index, flag_letters(flags), sector, nr_sectors)
            if mark is not None:
                line += " " + mark
            out.append(line)
    sys.stdout.write("\n".join(out) + "\n")


def replay(path, image, first, last):
    with open(path, "rb") as log, open(image, "r+b") as dev:
        _, sectorsize = read_super(log)
        for index, flags, sector, nr_sectors, _, data_offset in entries(log):
            if index > last:
                break
            if index < first or flags & MARK or nr_sectors == 0:
                continue
            dev.seek(sector * sectorsize)
            remaining = nr_sectors * sectorsize
            if flags & DISCARD:
                # Reads of discarded sectors return zeros on the devices tested here.
                while remaining:
                    n = min(remaining, len(ZEROS))
                    dev.write(ZEROS[:n])
                    remaining -= n
                continue
            log.seek(data_offset)
            while remaining:
                chunk = log.read(min(remaining, 1 << 20))
                if not chunk:
                    raise LogError("entry %d: log ends inside its data" % index)
                dev.write(chunk)
                remaining -= len(chunk)
        dev.flush()


def main(argv):
    try:
        if len(argv) == 3 and argv[1] == "list":
            list_log(argv[2])
        elif len(argv) == 6 and argv[1] == "replay":
            replay(argv[2], argv[3], int(argv[4]), int(argv[5]))
        else:
            sys.stderr.write(__doc__)
            return 2
    except (LogError, OSError, ValueError) as error:
        sys.stderr.write("logreplay: %s\n" % error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
