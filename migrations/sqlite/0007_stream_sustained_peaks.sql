-- Each stream segment's second-tier peaks (service/audio/peaks.py find_sustained_peaks),
-- beside its query-density peaks, so a stream's windows are matched under noise as clips are.
-- Serialised as `peaks` (core/stream_windows.py pack_peaks); empty for segments stored before
-- this migration, whose windows use their query-density peaks in that tier too.
ALTER TABLE stream_segments ADD COLUMN sustained_peaks BLOB NOT NULL DEFAULT x'';
