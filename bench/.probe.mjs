const s = performance.now(); await import(process.argv[2]); const t = performance.now() - s;
process.on('exit', () => console.log(process.argv[2].slice(-20), t.toFixed(1), 'total', performance.now().toFixed(1)));
