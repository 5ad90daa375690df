export { crc32c } from './crc32c.js';
export { parseLogPos, LogCorruptError, type LogPos, type LogRecord } from './format.js';
export { openLogWriter, type LogWriter, type LogWriterOptions, type FsyncPolicy, type AppendItem } from './writer.js';
export { readLog, readLogId, readLogApplied, readLogTail, waitForLog, type ReadLogOptions } from './reader.js';
export { logCat, logVerify, logStat, runLogCommand, type LogSubcommand, type LogCommandOptions } from './tools.js';
export { logRepair, type RepairResult } from './repair.js';
