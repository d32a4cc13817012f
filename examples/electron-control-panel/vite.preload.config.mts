import { defineConfig } from 'vite'

// The preload, bundled with shared/api.ts into one CommonJS file: a sandboxed preload may
// require only 'electron'.
export default defineConfig({
  build: {
    outDir: 'dist/preload',
    emptyOutDir: true,
    minify: false,
    lib: { entry: 'main/preload.ts', formats: ['cjs'], fileName: () => 'preload.js' },
    rollupOptions: { external: ['electron'] },
  },
})
