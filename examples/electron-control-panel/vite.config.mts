import { defineConfig } from 'vite'
import react from '@vitejs/plugin-react'

// The renderer: served by Electron from disk (relative paths) or by the web mode's server.
export default defineConfig({
  root: 'renderer',
  base: './',
  plugins: [react()],
  build: { outDir: '../dist/renderer', emptyOutDir: true, chunkSizeWarningLimit: 1024 },
})
